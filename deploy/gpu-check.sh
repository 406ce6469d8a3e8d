#!/usr/bin/env bash
# The GPU check of the CUDA build, for a machine with an NVIDIA GPU, its driver and PyTorch
# with the CUDA 13 wheels (no Rust needed: build the binary elsewhere with
# deploy/build-cuda.sh and copy it). From the repository root:
#   deploy/gpu-check.sh target-cuda/release/noiseda results/
# (a) parity: one joint step of Unet-S + Diffusion-B, forward and backward, on cuda:0 vs the
#     CPU (`noiseda bench parity`, fails above 1e-3 relative);
# (b) speed: the joint step at the paper's setting and the restore forward, and the smaller
#     CPU cases, next to PyTorch on the same GPU in the same run (`noiseda bench --compare`);
# (c) a Denoising-as-Adaptation training job (deploy/gpu-job.toml) through the gRPC service on
#     cuda:0, followed to the end.
# Everything goes to files under the output folder; the summary to stdout.
set -uo pipefail
bin="$(realpath "$1")"
out="$(realpath -m "$2")"
device="${DEVICE:-cuda:0}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
# The CUDA 13 runtime libraries (and cuDNN 9, for a FEATURES=cudnn build) of PyTorch's wheels
# (site-packages/nvidia/{cu13,cudnn}/lib), unless the system has them; libcuda.so.1 comes from
# the driver.
lib="$(python3 - <<'PY' 2>/dev/null
import glob, importlib.util, os
spec = importlib.util.find_spec("nvidia")
dirs = []
for root in (spec.submodule_search_locations if spec else []):
    for name in ("libcublas.so.13", "libcudnn.so.9"):
        hits = glob.glob(os.path.join(root, "*", "lib", name))
        if hits and os.path.dirname(hits[0]) not in dirs:
            dirs.append(os.path.dirname(hits[0]))
print(":".join(dirs))
PY
)"
if [ -n "$lib" ]; then
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
ldd "$bin" | grep -E "cuda|cublas|curand|not found" || true
export RUST_BACKTRACE=0
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))'
  "$bin" --version
} 2>&1 | tee "$out/machine.txt"

echo "== (a) parity"
"$bin" bench parity --device "$device" 2>&1 | tee "$out/parity.txt"
echo "parity exit ${PIPESTATUS[0]}" | tee -a "$out/parity.txt"
"$bin" bench parity --device "$device" --json > "$out/parity.json" 2>> "$out/parity.txt"

echo "== (b) speed"
"$bin" bench --device "$device" --cases "${CASES:-train-joint-paper,restore-8x512,train-joint,restore-8x256}" \
  --warmup "${WARMUP:-3}" --runs "${RUNS:-10}" --compare --json > "$out/bench.json" 2> "$out/bench.log"
echo "bench exit $?"
python3 - "$out/bench.json" <<'PY' | tee "$out/bench.txt"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"device {r['device']}; torch {r['torch']}; matmul peak candle {r['matmul_peak_gflops']:.0f} GFLOP/s, torch {r['reference_matmul_peak_gflops']:.0f}")
for c in r["cases"]:
    print(f"{c['name']:<18} noiseda {c['noiseda_ms']:9.2f} ms  torch {c['reference_ms']:9.2f} ms  ratio {c['ratio']:.2f}x  ({c['gflops']:.0f} GFLOP/s)")
PY

echo "== (c) a training job through the service"
job_spec="$out/job.toml"
sed -e "s/^device = .*/device = \"$device\"/" -e "s/^steps = .*/steps = ${STEPS:-300}/" \
  -e "s#\"data/demo\"#\"$PWD/data/demo\"#" deploy/gpu-job.toml > "$job_spec"
"$bin" serve --listen 127.0.0.1:50071 --metrics-listen 127.0.0.1:9171 --data-dir "${SERVE_DIR:-/tmp/noiseda-gpu-check}" \
  --devices "cpu,$device" --role training > "$out/serve.out" 2> "$out/serve.log" &
server=$!
for _ in $(seq 1 60); do
  "$bin" health --server 127.0.0.1:50071 --service noiseda.v1.Training >/dev/null 2>&1 && break
  sleep 1
done
grep -E "device=" "$out/serve.log" | tee "$out/devices.txt"
export NOISEDA_SERVER=127.0.0.1:50071
id="$("$bin" jobs submit "$job_spec")"
echo "job $id"
timeout "${JOB_TIMEOUT:-240}" "$bin" jobs follow "$id" > "$out/follow.txt" 2>&1
"$bin" jobs get "$id" --json > "$out/job.json"
"$bin" jobs metrics "$id" --csv > "$out/metrics.csv"
python3 - "$out/job.json" <<'PY' | tee "$out/job.txt"
import json, sys
j = json.load(open(sys.argv[1]))
p = j.get("progress") or {}
print(f"job {j['state']} step {p.get('step')}/{p.get('total_steps')} at {p.get('steps_per_second', 0):.2f} it/s; last error: {j.get('last_error', '')!r}")
print("latest metrics:", {k: round(v, 4) for k, v in (j.get("metrics") or {}).items()})
PY
kill -TERM "$server"; wait "$server"
echo "serve exit $?"
