//! The list family: push/pop at either end, ranges. Declarations only; `#[interface]`
//! generates the rest.

use crate::{interface, Driver, ListEnd, PluginResult};

/// `list_basic`: push and pop at either end, length.
#[interface]
pub trait ListBasic: Driver {
    /// Returns the list's length after the push.
    async fn push(&self, key: &str, end: ListEnd, values: Vec<Vec<u8>>) -> PluginResult<u64>;
    /// Pops up to `count` values; an absent list pops nothing.
    async fn pop(&self, key: &str, end: ListEnd, count: u32) -> PluginResult<Vec<Vec<u8>>>;
    async fn length(&self, key: &str) -> PluginResult<u64>;
}

/// `list_range`: indexed range and trim, Redis-style inclusive indexes (negative from the end).
#[interface]
pub trait ListRange: Driver {
    async fn range(&self, key: &str, start: i64, stop: i64) -> PluginResult<Vec<Vec<u8>>>;
    async fn trim(&self, key: &str, start: i64, stop: i64) -> PluginResult<()>;
}
