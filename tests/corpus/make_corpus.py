#!/usr/bin/env python3
"""Writes the hand-made part of the hostile-input corpus (tests/corpus/<target>/), replayed by
tests/hostile.rs::corpus_replays and used as fuzzing seeds. Needs Pillow. Run from anywhere."""
import io, json, os, struct, zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(w, h, idat=None, color=2):
    raw = idat if idat is not None else zlib.compress(b"\x00" * 16)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def real(fmt):
    from PIL import Image
    img = Image.new("RGB", (12, 10), (200, 30, 90))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


# ---- images
put("image", "empty.bin", b"")
put("image", "one-byte.bin", b"\x89")
put("image", "png-signature-only.png", b"\x89PNG\r\n\x1a\n")
put("image", "png-bomb-100000x100000.png", png(100000, 100000))
put("image", "png-zlib-bomb-512x512.png", png(512, 512, zlib.compress(b"\x00" * (1 << 22), 9)))
put("image", "png-wide-1x250000.png", png(1, 250000))
put("image", "png-zero-size.png", png(0, 0))
put("image", "png-max-u32.png", png(0xFFFFFFFF, 0xFFFFFFFF))
put("image", "png-bad-color-type.png", png(4, 4, color=7))
p = real("PNG")
put("image", "png-truncated.png", p[: len(p) // 2])
j = real("JPEG")
put("image", "jpeg-truncated.jpg", j[: len(j) // 2])
sof = j.find(b"\xff\xc0")
jj = bytearray(j)
jj[sof + 5:sof + 9] = struct.pack(">HH", 0xFFFF, 0xFFFF)
put("image", "jpeg-sof-65535x65535.jpg", bytes(jj))
w = real("WEBP")
put("image", "webp-truncated.webp", w[:30])
put("image", "webp-riff-size-huge.webp", w[:4] + struct.pack("<I", 0xFFFFFFF0) + w[8:])
vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (16383).to_bytes(3, "little") * 2
put("image", "webp-vp8x-16384x16384.webp", b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x)
put("image", "gif-not-supported.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
put("image", "bmp-not-supported.bmp", b"BM" + b"\x00" * 60)
put("image", "text.txt", "hello, this is not an image")


# ---- Restore requests (protobuf, hand-encoded)
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def raw(data, h, w, ch, pt):
    return field(1, 2, data) + field(2, 0, h) + field(3, 0, w) + field(4, 0, ch) + field(5, 0, pt)


def request(images, tile=0, overlap=0):
    msg = b"".join(field(1, 2, img) for img in images)
    if tile:
        msg += field(6, 0, tile)
    if overlap:
        msg += field(7, 0, overlap)
    return msg


raw_img = lambda *a: field(2, 2, raw(*a))
enc_img = lambda data: field(1, 2, field(1, 2, data))
put("request", "raw-max-dims.bin", request([raw_img(b"\x01" * 3, 0xFFFFFFFF, 0xFFFFFFFF, 3, 1)]))
put("request", "raw-len-mismatch.bin", request([raw_img(b"\x01" * 10, 2, 2, 3, 1)]))
put("request", "raw-f32-nan.bin", request([raw_img(struct.pack("<f", float("nan")) * 12, 2, 2, 3, 2)]))
put("request", "raw-f32-inf.bin", request([raw_img(struct.pack("<f", float("inf")) * 12, 2, 2, 3, 2)]))
put("request", "raw-4-channels.bin", request([raw_img(b"\x01" * 16, 2, 2, 4, 1)]))
put("request", "raw-pixel-type-99.bin", request([raw_img(b"\x01" * 12, 2, 2, 3, 99)]))
put("request", "raw-zero-size.bin", request([raw_img(b"", 0, 0, 3, 1)]))
put("request", "tile-1-overlap-0.bin", request([raw_img(b"\x01" * (257 * 256 * 3), 256, 257, 3, 1)], tile=1))
put("request", "tile-overlap-bigger.bin", request([raw_img(b"\x01" * (257 * 256 * 3), 256, 257, 3, 1)], tile=64, overlap=500))
put("request", "tile-max-u32.bin", request([raw_img(b"\x01" * (257 * 256 * 3), 256, 257, 3, 1)], tile=0xFFFFFFFF))
put("request", "encoded-empty.bin", request([enc_img(b"")]))
put("request", "no-image-kind.bin", request([b""]))
put("request", "many-images.bin", request([enc_img(b"x")] * 1000))
put("request", "truncated-varint.bin", b"\x0a\xff\xff\xff\xff\xff")

# ---- job specs
base = """name = "c"
steps = 10
[restorer]
preset = "unet-t"
[data]
patch = 32
batch = 2
[data.synthetic]
clean = "/srv/noiseda/data/clean"
degradation = { kind = "awgn", sigma = [0, 50] }
"""
put("spec", "base.toml", base)
put("spec", "deep-array.toml", "a = " + "[" * 5000 + "]" * 5000)
put("spec", "deep-table.toml", "a = " + "{b = " * 3000 + "1" + "}" * 3000)
put("spec", "deep-array.json", "[" * 100000)
put("spec", "steps-negative.toml", base.replace("steps = 10", "steps = -1"))
put("spec", "steps-huge.toml", base.replace("steps = 10", "steps = 18446744073709551616"))
put("spec", "batch-huge.toml", base.replace("batch = 2", "batch = 4294967296"))
put("spec", "patch-zero.toml", base.replace("patch = 32", "patch = 0"))
put("spec", "patch-huge.toml", base.replace("patch = 32", "patch = 1000000"))
put("spec", "sigma-nan.toml", base.replace("[0, 50]", "[nan, inf]"))
put("spec", "path-dotdot.toml", base.replace("/srv/noiseda/data/clean", "/srv/noiseda/data/../../../etc"))
put("spec", "path-nul.toml", base.replace("/srv/noiseda/data/clean", "/srv/noiseda/data/\\u0000x"))
put("spec", "path-relative.toml", base.replace("/srv/noiseda/data/clean", "../../etc"))
put("spec", "unknown-key.toml", base + "\nbogus = 1\n")
put("spec", "duplicate-key.toml", base + "\nsteps = 11\n")
put("spec", "json-types.json", json.dumps({"name": 1, "steps": "ten", "data": []}))
put("spec", "utf8-garbage.toml", b"name = \"\xff\xfe\"\n")

# ---- manifests (replayed against a real model's weights) and weights
manifest = {"name": "m", "arch": {"unet": {"width": 8, "depth": 2, "slope": 0.2}}, "parameters": 1,
            "sha256": "0" * 64, "weights": "raw", "range": "unit"}
put("manifest", "not-json.json", "{")
put("manifest", "array.json", "[]")
put("manifest", "empty-object.json", "{}")
put("manifest", "guess.json", json.dumps(manifest))
for k, v in [("width", 1 << 40), ("depth", 1 << 20), ("width", 0), ("depth", 0), ("slope", float("inf"))]:
    m = json.loads(json.dumps(manifest))
    m["arch"]["unet"][k] = v
    put("manifest", f"unet-{k}-{v}.json", json.dumps(m).replace("Infinity", "1e999"))
m = dict(manifest, arch={"dncnn": {"layers": 1 << 30, "features": 1 << 30}})
put("manifest", "dncnn-huge.json", json.dumps(m))
put("manifest", "deep.json", "[" * 100000)

put("weights", "empty.safetensors", b"")
put("weights", "header-len-huge.safetensors", struct.pack("<Q", 1 << 62) + b"{}")
put("weights", "header-not-json.safetensors", struct.pack("<Q", 5) + b"{{{{{")
hdr = json.dumps({"x": {"dtype": "F32", "shape": [1 << 30, 1 << 30], "data_offsets": [0, 4]}}).encode()
put("weights", "shape-huge.safetensors", struct.pack("<Q", len(hdr)) + hdr + b"\x00" * 4)
hdr = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1 << 40]}}).encode()
put("weights", "offsets-beyond.safetensors", struct.pack("<Q", len(hdr)) + hdr + b"\x00" * 8)
hdr = json.dumps({"x": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}).encode()
put("weights", "wrong-tensor.safetensors", struct.pack("<Q", len(hdr)) + hdr + b"\x00" * 8)
# found by fuzz_manifest: a manifest that is not UTF-8 was reported as an internal I/O error
put("manifest", "not-utf8.json", b'{"name": "\xff\xfe"}')
