"""tritonclient.http (NVIDIA's REST client of the Open Inference Protocol) against noiseda.

Usage: triton_http_client.py HOST:PORT MODEL OUT_DIR MAX_BATCH
Checks live / ready / model-ready, the server and model metadata, the model configuration
(max_batch_size = the server's MAX_BATCH) and statistics; restores a UINT8 batch of 1 and of 4
with the binary-data extension and the batch of 4 again as JSON values, and an FP32 batch of 1;
writes outputs (and inputs) as raw bytes to OUT_DIR for the caller to compare with
noiseda.v1.Restore; then checks that bad requests get the protocol's HTTP statuses, the message
naming the field. Prints "ok" on success.
"""
import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def image(k, h=36, w=40):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 5 + k * 31) % 256, (y * 7 + k * 17) % 256, ((x + y) * 3 + k) % 256], -1)
    return rgb.astype(np.uint8)


def infer(client, model, array, datatype, binary=True):
    inp = httpclient.InferInput("INPUT", list(array.shape), datatype)
    inp.set_data_from_numpy(array, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT", binary_data=binary)
    result = client.infer(model, [inp], outputs=[out], request_id="r1")
    return result.as_numpy("OUTPUT"), result.get_response()


def expect_error(status, fn):
    try:
        fn()
    except InferenceServerException as e:
        assert str(e.status()) == str(status), (status, e.status(), e.message())
        return e.message()
    raise AssertionError(f"expected HTTP {status}")


def main():
    address, model, out_dir, max_batch = sys.argv[1:5]
    max_batch = int(max_batch)
    client = httpclient.InferenceServerClient(url=address)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(model)
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata(model)
    assert meta["name"] == model and meta["versions"][0].isdigit(), meta  # integer versions, as Triton's tools expect
    assert [t["name"] for t in meta["inputs"]] == ["INPUT"], meta
    assert meta["inputs"][0]["shape"] == [-1, -1, -1, 3] and meta["inputs"][0]["datatype"] == "UINT8", meta
    assert [t["name"] for t in meta["outputs"]] == ["OUTPUT"], meta
    server = client.get_server_metadata()
    assert server["name"] == "noiseda", server
    assert {"model_configuration", "statistics"} <= set(server["extensions"]), server
    config = client.get_model_config(model)
    assert config["name"] == model and config["max_batch_size"] == max_batch, config
    assert config["input"][0]["data_type"] == "TYPE_UINT8" and config["input"][0]["dims"] == [-1, -1, 3], config
    assert config["input"][0]["format"] == "FORMAT_NHWC", config
    assert config["dynamic_batching"]["preferred_batch_size"] == [max_batch], config
    expect_error(404, lambda: client.get_model_config("no-such-model"))

    one = image(0)[None]
    four = np.stack([image(k) for k in range(4)])
    for name, batch in [("u8-1", one), ("u8-4", four)]:
        out, resp = infer(client, model, batch, "UINT8")
        assert out.shape == batch.shape and out.dtype == np.uint8, (out.shape, out.dtype)
        assert resp["model_name"] == model and resp["id"] == "r1", resp
        batch.tofile(os.path.join(out_dir, f"{name}.in"))
        out.tofile(os.path.join(out_dir, f"{name}.out"))
    # JSON values instead of binary data: the same answer.
    out_json, _ = infer(client, model, four, "UINT8", binary=False)
    assert np.array_equal(out_json, np.fromfile(os.path.join(out_dir, "u8-4.out"), np.uint8).reshape(four.shape))
    # No outputs requested: tritonclient asks for binary outputs (binary_data_output).
    inp = httpclient.InferInput("INPUT", list(one.shape), "UINT8")
    inp.set_data_from_numpy(one)
    plain = client.infer(model, [inp]).as_numpy("OUTPUT")
    assert np.array_equal(plain, np.fromfile(os.path.join(out_dir, "u8-1.out"), np.uint8).reshape(one.shape))

    f32 = one.astype(np.float32) / 255.0
    out, _ = infer(client, model, f32, "FP32")
    assert out.shape == f32.shape and out.dtype == np.float32, (out.shape, out.dtype)
    out.tofile(os.path.join(out_dir, "f32-1.out"))
    out_json, _ = infer(client, model, f32, "FP32", binary=False)
    assert np.array_equal(out, out_json), np.abs(out - out_json).max()

    # Statistics: 6 requests (u8-1, u8-4, the JSON u8-4, the plain u8-1, two FP32), 12 images.
    stats = client.get_inference_statistics(model)["model_stats"]
    assert len(stats) == 1 and stats[0]["name"] == model, stats
    s = stats[0]
    assert s["inference_stats"]["success"]["count"] == 6, s
    assert s["inference_count"] == 12, s
    assert s["execution_count"] == sum(b["compute_infer"]["count"] for b in s["batch_stats"]), s
    assert len(client.get_inference_statistics()["model_stats"]) >= 1

    # Bad requests: the protocol's statuses, the message naming the field.
    m = expect_error(404, lambda: infer(client, "no-such-model", one, "UINT8"))
    assert "no-such-model" in m, m
    m = expect_error(400, lambda: infer(client, model, one.astype(np.int16), "INT16"))
    assert "datatype" in m, m
    m = expect_error(400, lambda: infer(client, model, one[..., :2].copy(), "UINT8"))
    assert "shape" in m, m
    wrong = httpclient.InferInput("IMAGE", [1, 36, 40, 3], "UINT8")
    wrong.set_data_from_numpy(one)
    m = expect_error(400, lambda: client.infer(model, [wrong]))
    assert "INPUT" in m, m
    # Hand-written bodies tritonclient would not send: a short value list, a broken header.
    url = f"http://{address}/v2/models/{model}/infer"
    for body, field in [
        ({"inputs": [{"name": "INPUT", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}, "inputs[0].data"),
        ({"inputs": [{"name": "INPUT", "datatype": "UINT8", "data": [1, 2, 3]}]}, "shape"),
    ]:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError(f"accepted {body}")
        except urllib.error.HTTPError as e:
            err = json.loads(e.read())["error"]
            assert e.code == 400 and field in err, (e.code, err)
    print("ok")


if __name__ == "__main__":
    main()
