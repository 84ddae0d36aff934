//! The client-facing gRPC API: the `prism-api` crate, under the name the host's
//! services use.

pub use prism_api::*;
