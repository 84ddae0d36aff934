//! The client-facing gRPC API, generated from `proto/prism/v1/*.proto`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("prism.v1");

/// The encoded descriptors of `prism.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("prism_v1_descriptor");
