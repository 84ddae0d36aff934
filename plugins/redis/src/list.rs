//! Lists map onto Redis lists one to one.

use plugin_abi::PluginResult;
use plugin_abi::{ListBasic, ListEnd, ListRange};
use redis::AsyncCommands;

use crate::errors::plugin_error;
use crate::Redis;

impl ListBasic for Redis {
    async fn push(&self, key: &str, end: ListEnd, values: Vec<Vec<u8>>) -> PluginResult<u64> {
        let mut connection = self.connection.clone();
        let list = self.keys.list(key);
        match end {
            ListEnd::Left => connection.lpush(list, values).await,
            ListEnd::Right => connection.rpush(list, values).await,
        }
        .map_err(plugin_error)
    }

    async fn pop(&self, key: &str, end: ListEnd, count: u32) -> PluginResult<Vec<Vec<u8>>> {
        let mut connection = self.connection.clone();
        let list = self.keys.list(key);
        let count = std::num::NonZeroUsize::new(count.max(1) as usize);
        let popped: Option<Vec<Vec<u8>>> = match end {
            ListEnd::Left => connection.lpop(list, count).await,
            ListEnd::Right => connection.rpop(list, count).await,
        }
        .map_err(plugin_error)?;
        Ok(popped.unwrap_or_default())
    }

    async fn length(&self, key: &str) -> PluginResult<u64> {
        let mut connection = self.connection.clone();
        connection.llen(self.keys.list(key)).await.map_err(plugin_error)
    }
}

impl ListRange for Redis {
    async fn range(&self, key: &str, start: i64, stop: i64) -> PluginResult<Vec<Vec<u8>>> {
        let mut connection = self.connection.clone();
        connection.lrange(self.keys.list(key), start as isize, stop as isize).await.map_err(plugin_error)
    }

    async fn trim(&self, key: &str, start: i64, stop: i64) -> PluginResult<()> {
        let mut connection = self.connection.clone();
        connection.ltrim(self.keys.list(key), start as isize, stop as isize).await.map_err(plugin_error)
    }
}
