#!/usr/bin/env bash
# Step time with and without the TensorBoard exporter (tracking.tensorboard), on this machine:
# the same spec run alternately on, off, on, off, … (ROUNDS pairs, STEPS steps each); prints
# each run's s/step and the ratio of the means. Needs ../shared/data and a release build.
#   scripts/tracking-overhead.sh [SPEC] [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
spec=${1:-examples/unet-t-awgn.toml}
steps=${2:-60}
rounds=${3:-3}
bin=target/release/noiseda
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for tb in true false; do
  python3 - "$spec" "$steps" "$tb" "$tmp/$tb.toml" <<'PY'
import sys, tomllib, pathlib
src, steps, tb, out = sys.argv[1:]
spec = tomllib.loads(pathlib.Path(src).read_text())
base = pathlib.Path(src).resolve().parent
def fix(p):
    return str((base / p).resolve())
d = spec["data"]
for k in ("clean", "lq", "gt", "root"):
    if k in d.get("synthetic", {}):
        d["synthetic"][k] = fix(d["synthetic"][k])
for k in ("real", "unpaired"):
    if k in d:
        d[k]["dir"] = fix(d[k]["dir"])
d.pop("val", None)  # step time only: validation is not part of a step
spec["steps"] = int(steps)
spec["checkpoint"] = {"every": 0, "keep_last": 0}
spec["tracking"] = {"tensorboard": tb == "true"}
def emit(t, prefix=""):
    lines, tables = [], []
    for k, v in t.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {toml(v)}")
    out = "\n".join(lines) + "\n"
    for k, v in tables:
        name = f"{prefix}{k}"
        inner = emit(v, name + ".")
        out += f"[{name}]\n{inner}"
    return out
def toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml(x)}" for k, x in v.items()) + " }"
    return repr(v)
pathlib.Path(out).write_text(emit(spec))
PY
done
declare -A sum=([true]=0 [false]=0)
for r in $(seq "$rounds"); do
  for tb in true false; do
    line=$("$bin" train --config "$tmp/$tb.toml" --out "$tmp/run-$tb-$r" 2>&1 | grep -o '[0-9.]* s/step')
    s=${line% s/step}
    echo "round $r tensorboard=$tb: $s s/step"
    sum[$tb]=$(python3 -c "print(${sum[$tb]} + $s)")
  done
done
python3 -c "on, off = ${sum[true]} / $rounds, ${sum[false]} / $rounds; print(f'mean s/step: tensorboard on {on:.4f}, off {off:.4f}, on/off {on / off:.4f}')"
