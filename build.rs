//! Compiles `proto/` with the pure-Rust `protox` compiler (no protoc needed) and tonic-prost-build,
//! and writes the descriptor set that gRPC server reflection serves.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "noiseda/v1/model.proto",
            "noiseda/v1/training.proto",
            "noiseda/v1/restore.proto",
            "inference/model_config.proto",
            "inference/grpc_service.proto",
        ],
        ["proto"],
    )?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("noiseda_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
