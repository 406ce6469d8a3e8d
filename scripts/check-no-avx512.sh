#!/usr/bin/env bash
# Checks that the release binary (built with gemm's AVX-512 kernel enabled) still runs on a CPU
# without AVX-512 and gives the same output: restores one image natively and under QEMU's
# emulated Haswell CPU (AVX2, no AVX-512), then compares the two PNGs byte for byte.
# Needs: apt-get install qemu-user; a model artifact (e.g. from `noiseda demo --steps 5`).
# Usage: scripts/check-no-avx512.sh MODEL_DIR IMAGE
set -euo pipefail
model=${1:?model dir}
img=${2:?image}
bin=target/release/noiseda
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" restore --model "$model" "$img" "$tmp/native.png"
qemu-x86_64 -cpu Haswell "$bin" restore --model "$model" "$img" "$tmp/haswell.png" 2>/dev/null
if cmp -s "$tmp/native.png" "$tmp/haswell.png"; then
  echo "ok: identical output without AVX-512 (emulated Haswell)"
else
  echo "outputs differ between native and emulated Haswell" >&2
  exit 1
fi
