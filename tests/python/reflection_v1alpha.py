"""Lists a server's services through gRPC reflection v1alpha with grpcio-reflection's own client
stubs, and resolves one service's file descriptor. Prints "ok <service> ..." on success.
    python3 reflection_v1alpha.py HOST:PORT
"""
import sys

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [answer] = list(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    )
    services = sorted(s.name for s in answer.list_services_response.service)
    if not services:
        sys.exit(f"no services listed: {answer}")
    [answer] = list(
        stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="noiseda.v1.Training")]),
            timeout=10,
        )
    )
    files = answer.file_descriptor_response.file_descriptor_proto
    if not files:
        sys.exit(f"noiseda.v1.Training did not resolve: {answer}")
    print("ok", " ".join(services))


if __name__ == "__main__":
    main()
