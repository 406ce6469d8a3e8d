"""A Python gRPC client of noiseda's Restore and Models services (grpcio, stubs from proto/).

Usage: restore_client.py PROTO_DIR ADDRESS IMAGE.png
Restores a PNG, checks the reply's shape, model identity and timings, sends raw RGB bytes, and
checks that a corrupt image is INVALID_ARGUMENT. Prints "ok <model> <version>" on success.
"""
import sys

import grpc

from stubs import generate


def main():
    proto_dir, address, image = sys.argv[1:4]
    pb, rpc = generate(proto_dir, "restore")
    channel = grpc.insecure_channel(address)
    restore = rpc.RestoreStub(channel)
    models = rpc.ModelsStub(channel)

    listed = models.ListModels(pb.ListModelsRequest(), timeout=30).models
    assert len(listed) == 1 and listed[0].is_default, listed

    png = open(image, "rb").read()
    req = pb.RestoreRequest(
        images=[pb.ImageInput(encoded=pb.EncodedImage(data=png))],
        output_format=pb.OUTPUT_FORMAT_PNG,
    )
    r = restore.Restore(req, timeout=60)
    out = r.images[0]
    assert out.data[:8] == b"\x89PNG\r\n\x1a\n", out.data[:8]
    assert (out.width, out.height) == (40, 36), (out.width, out.height)
    assert r.model == listed[0].name and r.version == listed[0].version
    assert out.timing.total_us >= out.timing.inference_us > 0

    raw = pb.RawImage(data=bytes(40 * 36 * 3), height=36, width=40, channels=3,
                      pixel_type=pb.PIXEL_TYPE_U8)
    r = restore.Restore(pb.RestoreRequest(images=[pb.ImageInput(raw=raw)],
                                          output_format=pb.OUTPUT_FORMAT_RAW_U8), timeout=60)
    assert len(r.images[0].data) == 40 * 36 * 3

    try:
        restore.Restore(pb.RestoreRequest(images=[pb.ImageInput(encoded=pb.EncodedImage(data=b"junk"))]),
                        timeout=30)
        raise AssertionError("a corrupt image must fail")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
        assert "image 0" in e.details(), e.details()
    print("ok", r.model, r.version)


if __name__ == "__main__":
    main()
