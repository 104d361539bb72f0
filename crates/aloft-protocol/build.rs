//! Compiles proto/aloft/v1/*.proto with protox (pure Rust: no system protoc).
//! Messages are always generated; tonic stubs only with the `grpc` feature.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "aloft/v1/signed.proto",
        "aloft/v1/device.proto",
        "aloft/v1/admin.proto",
        "aloft/v1/ops.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .build_transport(grpc)
        .btree_map(".")
        // Small per-RPC codec buffers (src/codec.rs).
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}
