//! The Prism host: loads driver plugins over the stable ABI, binds them to namespaces
//! by pattern and slot, and serves the `prism.v1` gRPC API.

#![forbid(unsafe_code)]

pub mod admin_http;
pub mod api;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connections;
pub mod filter;
pub mod gateway;
pub mod health;
pub mod layers;
pub mod loader;
pub mod observe;
pub mod patterns;
pub mod quota;
pub mod reload;
pub mod resolve;
pub mod secrets;
pub mod server;
pub mod service;
pub mod shared;
pub mod store;
pub mod tls;
pub mod watch;

/// Process isolation and probe children live in their own crate (`prism-isolation`).
pub use prism_isolation as isolation;
