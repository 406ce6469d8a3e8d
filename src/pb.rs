//! Generated protobuf types and gRPC stubs: package `noiseda.v1`, and `inference` (the Open
//! Inference Protocol, [`inference`]).
tonic::include_proto!("noiseda.v1");

/// The Open Inference Protocol (KServe v2 / Triton) gRPC API: `inference.GRPCInferenceService`.
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded descriptor set of every `noiseda.v1` file (for gRPC server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("noiseda_descriptor");
