//! The client-facing gRPC API, generated from `proto/prism/v1/*.proto`: what the host
//! serves and what the load tool and the tests call, and nothing else, so they need not
//! link the host.

#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("prism.v1");

/// The encoded descriptors of `prism.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("prism_v1_descriptor");
