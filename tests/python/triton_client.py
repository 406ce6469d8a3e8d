"""tritonclient (NVIDIA's own Python client of the Open Inference Protocol) against noiseda.

Usage: triton_client.py HOST:PORT MODEL OUT_DIR MAX_BATCH
Checks live / ready / model-ready, the server and model metadata and the model configuration
(max_batch_size = the server's MAX_BATCH), restores a UINT8 batch of 1 and of 4
and an FP32 batch of 1, and writes the outputs (and inputs) as raw bytes to OUT_DIR for the
caller to compare with noiseda.v1.Restore; checks the model's statistics; then checks that
bad requests get the protocol's codes. Prints "ok" on success.
"""
import os
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


def image(k, h=36, w=40):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 5 + k * 31) % 256, (y * 7 + k * 17) % 256, ((x + y) * 3 + k) % 256], -1)
    return rgb.astype(np.uint8)


def infer(client, model, array, datatype):
    inp = grpcclient.InferInput("INPUT", list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    out = grpcclient.InferRequestedOutput("OUTPUT")
    result = client.infer(model, [inp], outputs=[out])
    return result.as_numpy("OUTPUT"), result.get_response()


def expect_error(code, fn):
    try:
        fn()
    except InferenceServerException as e:
        assert code in str(e.status()), (code, e.status(), e.message())
        return e.message()
    raise AssertionError(f"expected {code}")


def main():
    address, model, out_dir, max_batch = sys.argv[1:5]
    max_batch = int(max_batch)
    client = grpcclient.InferenceServerClient(url=address)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(model)
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata(model)
    assert meta.name == model and meta.versions[0].isdigit(), meta  # integer versions, as Triton's tools expect
    assert [t.name for t in meta.inputs] == ["INPUT"] and list(meta.inputs[0].shape) == [-1, -1, -1, 3], meta
    assert [t.name for t in meta.outputs] == ["OUTPUT"], meta
    server = client.get_server_metadata()
    assert server.name == "noiseda", server
    assert "model_configuration" in server.extensions, server
    config = client.get_model_config(model).config
    assert config.name == model and config.max_batch_size == max_batch, config
    assert [i.name for i in config.input] == ["INPUT"] and list(config.input[0].dims) == [-1, -1, 3], config
    assert config.input[0].data_type == model_config_pb2.TYPE_UINT8, config
    assert list(config.dynamic_batching.preferred_batch_size) == [max_batch], config
    expect_error("NOT_FOUND", lambda: client.get_model_config("no-such-model"))

    one = image(0)[None]
    four = np.stack([image(k) for k in range(4)])
    for name, batch in [("u8-1", one), ("u8-4", four)]:
        out, resp = infer(client, model, batch, "UINT8")
        assert out.shape == batch.shape and out.dtype == np.uint8, (out.shape, out.dtype)
        assert resp.model_name == model
        batch.tofile(os.path.join(out_dir, f"{name}.in"))
        out.tofile(os.path.join(out_dir, f"{name}.out"))
    # Streaming: three requests on one stream, answered in order, equal to the unary answers.
    import queue

    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    unary = []
    for k in range(3):
        batch = image(k)[None]
        inp = grpcclient.InferInput("INPUT", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        client.async_stream_infer(model, [inp], request_id=str(k))
        unary.append(infer(client, model, batch, "UINT8")[0])
    bad = grpcclient.InferInput("INPUT", [1, 36, 40, 2], "UINT8")
    bad.set_data_from_numpy(one[..., :2].copy())
    client.async_stream_infer(model, [bad], request_id="bad")
    for k in range(3):
        result, error = answers.get(timeout=60)
        assert error is None, error
        assert result.get_response().id == str(k), result.get_response().id
        assert np.array_equal(result.as_numpy("OUTPUT"), unary[k]), k
    result, error = answers.get(timeout=60)
    assert error is not None and "shape" in str(error), (result, error)
    client.stop_stream()

    f32 = one.astype(np.float32) / 255.0
    out, _ = infer(client, model, f32, "FP32")
    assert out.shape == f32.shape and out.dtype == np.float32, (out.shape, out.dtype)
    out.tofile(os.path.join(out_dir, "f32-1.out"))

    # Statistics: 9 requests answered so far (1 + 1 of UINT8, 3 streamed, 3 unary, 1 FP32) with
    # 12 images, every forward pass in batch_stats.
    assert "statistics" in server.extensions, server
    stats = client.get_inference_statistics(model).model_stats
    assert len(stats) == 1 and stats[0].name == model, stats
    s = stats[0]
    assert s.inference_stats.success.count == 9, s
    assert s.inference_count == 12, s
    assert s.execution_count == sum(b.compute_infer.count for b in s.batch_stats), s
    assert 1 <= s.execution_count <= 12 and s.last_inference > 0, s
    assert s.inference_stats.compute_infer.ns > 0 and s.inference_stats.success.ns > 0, s
    assert len(client.get_inference_statistics().model_stats) >= 1
    expect_error("NOT_FOUND", lambda: client.get_inference_statistics("no-such-model"))

    # Bad requests: the protocol's codes, the message naming the field.
    m = expect_error("NOT_FOUND", lambda: infer(client, "no-such-model", one, "UINT8"))
    assert "no-such-model" in m, m
    m = expect_error("INVALID_ARGUMENT", lambda: infer(client, model, one.astype(np.int16), "INT16"))
    assert "datatype" in m, m
    m = expect_error("INVALID_ARGUMENT", lambda: infer(client, model, one[..., :2].copy(), "UINT8"))
    assert "shape" in m, m
    # A raw buffer shorter than its shape, sent with tritonclient's own protocol stubs (its
    # InferInput checks sizes before sending).
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    req = service_pb2.ModelInferRequest(model_name=model)
    req.inputs.add(name="INPUT", datatype="UINT8", shape=[1, 36, 40, 3])
    req.raw_input_contents.append(b"\0" * 10)
    try:
        stub.ModelInfer(req, timeout=30)
        raise AssertionError("a short raw buffer was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "raw_input_contents" in e.details(), e.details()
    wrong = grpcclient.InferInput("IMAGE", [1, 36, 40, 3], "UINT8")
    wrong.set_data_from_numpy(one)
    m = expect_error("INVALID_ARGUMENT", lambda: client.infer(model, [wrong]))
    assert "INPUT" in m, m
    print("ok")


if __name__ == "__main__":
    main()
