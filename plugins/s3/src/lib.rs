//! s3: objects on an S3-compatible store (AWS S3, MinIO, Ceph, s3s …) for Prism's large
//! payloads: the `object_store_basic` interface, which the gateway's claim check and
//! `SetStream`/`GetStream` use. Objects are written in parts of `part_size_bytes` with
//! at most two parts in flight, and read as the HTTP body arrives, so an object of any
//! size moves through a bounded amount of memory.

#![forbid(unsafe_code)]

mod config;
mod errors;
mod store;
mod upload;

pub use config::Config;
pub use store::S3;

plugin_abi::export_plugin! {
    driver: S3,
    name: "s3",
    description: "Objects of any size on an S3-compatible store, written and read in chunks",
    connection_format: "endpoint = \"http://127.0.0.1:9000\", bucket = \"prism\"",
    interfaces: [ObjectStoreBasic],
}
