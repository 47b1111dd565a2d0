//! Generates the snapshots API from the vendored `.proto` files.
//!
//! protox (a protobuf compiler in Rust) parses them into a descriptor set,
//! so no `protoc` is needed; tonic-prost-build turns the containerd
//! packages of that set into prost messages and a tonic client and server.
//! The imported files (gogo options, Google's well-known types) are only
//! needed to resolve names: their types map to `prost-types`.

use std::error::Error;

/// The service file; everything it imports is found under `proto/`.
const SERVICE: &str = "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile([SERVICE], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
