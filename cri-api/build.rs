//! Compiles the CRI `runtime.v1` proto with protox (pure Rust: no system
//! `protoc`), then generates prost messages and the tonic client.

const PROTO: &str = "proto/runtime/v1/api.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .skip_protoc_run()
        .compile_fds(descriptors)?;
    Ok(())
}
