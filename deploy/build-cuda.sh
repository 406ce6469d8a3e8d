#!/usr/bin/env bash
# Builds the CUDA binary of noiseda (`--features cuda`) on a machine without a GPU or a system
# CUDA toolkit: nvcc and the CUDA 13.0 libraries come from PyPI (`cuda-toolkit` wheels, ≈ 1.2 GB
# in a venv), and the driver library libcuda.so, which only a GPU driver installs, is replaced at
# link time by a stub with the same symbols. The binary needs the real driver at run time.
#   deploy/build-cuda.sh                      # CUDA_COMPUTE_CAP=90 (H100/H200)
#   CUDA_COMPUTE_CAP=80 deploy/build-cuda.sh  # A100
#   FEATURES=cudnn deploy/build-cuda.sh       # + cuDNN convolutions (cuDNN 9 from PyPI too)
# Output: target-cuda/release/noiseda (run it with LD_LIBRARY_PATH pointing at the CUDA 13
# libraries: the system's, or a Python's site-packages/nvidia/cu13/lib).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
venv="${CUDA_VENV:-$root/.cuda-venv}"
toolkit_version="${CUDA_TOOLKIT_VERSION:-13.0.2}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
features="${FEATURES:-cuda}"

# 1. nvcc + libraries. 13.0.x on purpose: its PTX ISA is what CUDA 13.0 drivers (580) can JIT.
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import nvidia" 2>/dev/null || [ ! -x "$(find "$venv" -path '*nvidia/cu13/bin/nvcc' | head -1)" ]; then
  "$venv/bin/pip" install --quiet \
    "cuda-toolkit[nvcc,crt,cudart,cublas,curand,nvrtc,cccl,nvvm]==${toolkit_version}"
fi
if [ "$features" = cudnn ] && ! "$venv/bin/python" -c "import nvidia.cudnn" 2>/dev/null; then
  "$venv/bin/pip" install --quiet "nvidia-cudnn-cu13==${CUDNN_VERSION:-9.28.1.4}"
fi
nvcc="$(find "$venv" -path '*nvidia/cu13/bin/nvcc' | head -1)"
cu="$(dirname "$(dirname "$nvcc")")"
"$nvcc" --version | tail -1

# 2. A link folder: unversioned names for the wheels' libraries, and a stub libcuda.so.1 with
#    every cu* entry point cudarc declares (each returns an error; never used at run time).
links="$root/target-cuda/link"
mkdir -p "$links"
for lib in cudart cublas cublasLt curand nvrtc; do
  real="$(find "$cu/lib" -maxdepth 1 -name "lib${lib}.so.*" | sort | head -1)"
  [ -n "$real" ] || { echo "missing lib${lib}.so in $cu/lib" >&2; exit 1; }
  ln -sf "$real" "$links/lib${lib}.so"
done
if [ "$features" = cudnn ]; then
  cudnn="$(find "$venv" -path '*nvidia/cudnn/lib/libcudnn.so.9' | head -1)"
  [ -n "$cudnn" ] || { echo "missing libcudnn.so.9 in $venv" >&2; exit 1; }
  ln -sf "$cudnn" "$links/libcudnn.so"
fi
cargo fetch --locked
cudarc_sys="$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*cudarc-*/src/driver/sys/mod.rs' | sort | tail -1)"
grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc_sys" | awk '{print $4}' | sort -u \
  | awk '{printf "int %s(void) { return 999; }\n", $1}' > "$links/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$links/libcuda.so" "$links/libcuda_stub.c"
ln -sf libcuda.so "$links/libcuda.so.1"

# 3. The build (most of the time goes to nvcc compiling candle's kernels).
export PATH="$cu/bin:$PATH" NVCC="$nvcc" CUDA_HOME="$cu" CUDARC_CUDA_VERSION=13000
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$links"
cargo build --release --locked --features "$features" --bin noiseda --target-dir "$root/target-cuda"
ls -la "$root/target-cuda/release/noiseda"
echo "built target-cuda/release/noiseda ($features) for compute capability $CUDA_COMPUTE_CAP"
