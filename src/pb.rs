//! Generated protobuf types and gRPC stubs of package `noiseda.v1`.
tonic::include_proto!("noiseda.v1");

/// Encoded descriptor set of every `noiseda.v1` file (for gRPC server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("noiseda_descriptor");
