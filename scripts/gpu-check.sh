#!/usr/bin/env bash
# The CUDA path in one step: on a machine with an NVIDIA GPU, installs the GPU build of ONNX Runtime
# and the CUDA runtime libraries it needs from PyPI into the cache, then runs generation and the solve
# of every shipped model on the CUDA execution provider against the CPU (<= 1e-4) and prints a timing
# table at batch 1, 64 and 1024 (piddm-gpu-check). Without a GPU it says so and exits 0.
#   scripts/gpu-check.sh [MODEL.onnx...]      (default: every model in examples/models)
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
CACHE="${PIDDM_CACHE:-$HOME/.cache/piddm}"
log() { printf '[gpu-check] %s\n' "$*" >&2; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu-check: no NVIDIA GPU on this machine (nvidia-smi finds none): nothing to check here; the CPU path is what scripts/test.sh covers. Run this script where a GPU is at hand."
  exit 0
fi
nvidia-smi -L >&2

bash scripts/setup.sh
source "$CACHE/env.sh"

# ONNX Runtime's GPU build with its CUDA 13 and cuDNN 9 libraries (the wheel's extras), and cuBLAS.
GPU_DIR="$CACHE/ort-gpu-$ORT_VERSION"
if [ ! -f "$GPU_DIR/.done" ]; then
  log "installing onnxruntime-gpu $ORT_VERSION and the CUDA libraries into $GPU_DIR"
  rm -rf "$GPU_DIR"
  python3 -m venv "$GPU_DIR/venv"
  "$GPU_DIR/venv/bin/pip" install -q "onnxruntime-gpu[cuda,cudnn]==$ORT_VERSION" "nvidia-cublas~=13.0"
  touch "$GPU_DIR/.done"
fi
SITE=$(ls -d "$GPU_DIR"/venv/lib/python3*/site-packages)
export PIDDM_ORT_LIBRARY="$SITE/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
# the CUDA execution provider finds the CUDA libraries on the loader's path
LIBS=$(find "$SITE/nvidia" -type d -name lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="${LIBS}$SITE/onnxruntime/capi:${LD_LIBRARY_PATH:-}"

cargo build --release --bin piddm-gpu-check
if [ $# -eq 0 ]; then
  set -- $(ls examples/models/*.onnx | grep -E '/[^.]+\.onnx$')
fi
exec target/release/piddm-gpu-check "$@"
