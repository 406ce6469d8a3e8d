//! Generated protobuf types and gRPC stubs of package `noiseda.v1`.
tonic::include_proto!("noiseda.v1");
