//! Compiles `proto/prism/v1` into the crate, with a vendored `protoc`.

#![forbid(unsafe_code)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    // A vendored protoc, so building needs nothing installed on the machine.
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    // Maps as BTreeMaps: a message then encodes to the same bytes every time, which the
    // gateway's idempotency check compares (a retry's request must be the first one's).
    config.btree_map(["."]);
    // The protos live outside this crate's directory, which is all cargo watches by default.
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("prism_v1_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                "../proto/prism/v1/keyvalue.proto",
                "../proto/prism/v1/list.proto",
                "../proto/prism/v1/admin.proto",
                "../proto/prism/v1/queue.proto",
                "../proto/prism/v1/pubsub.proto",
                "../proto/prism/v1/stream.proto",
                "../proto/prism/v1/multicast.proto",
            ],
            &["../proto"],
        )?;
    Ok(())
}
