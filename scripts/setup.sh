#!/usr/bin/env bash
# Installs every native dependency of piddm, idempotently, into a versioned cache outside the clone,
# and writes $PIDDM_CACHE/env.sh that the build and test scripts source.
# Everything comes from package registries (PyPI, Debian); nothing else is downloaded.
set -euo pipefail

TORCH_VERSION=2.13.0
ORT_VERSION=1.31.1
ONNX_VERSION=1.23.2
CACHE="${PIDDM_CACHE:-$HOME/.cache/piddm}"
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- libtorch (trainer only): the torch wheel without its CUDA dependencies, plus the two CUDA
# runtime libraries that libtorch_cpu.so links against even on CPU.
TORCH_DIR="$CACHE/torch-$TORCH_VERSION"
if [ ! -f "$TORCH_DIR/.done" ]; then
  log "installing libtorch $TORCH_VERSION into $TORCH_DIR"
  rm -rf "$TORCH_DIR"
  python3 -m venv "$TORCH_DIR/venv"
  "$TORCH_DIR/venv/bin/pip" install -q --no-deps "torch==$TORCH_VERSION" \
    "nvidia-cuda-runtime==13.0.96.*" "nvidia-cuda-cupti==13.0.85.*"
  touch "$TORCH_DIR/.done"
fi
LIBTORCH=$(cd "$TORCH_DIR/venv" && "$TORCH_DIR/venv/bin/python" -c \
  'import sysconfig,os; print(os.path.realpath(os.path.join(sysconfig.get_paths()["purelib"],"torch")))')

# --- ONNX Runtime (runtime) and the ONNX checker, numpy and onnxruntime in one venv: the runtime
# loads the shared library from the wheel; the tests use the Python packages as an independent check.
ORT_DIR="$CACHE/ort-$ORT_VERSION"
if [ ! -f "$ORT_DIR/.done" ]; then
  log "installing onnxruntime $ORT_VERSION and onnx $ONNX_VERSION into $ORT_DIR"
  rm -rf "$ORT_DIR"
  python3 -m venv "$ORT_DIR/venv"
  "$ORT_DIR/venv/bin/pip" install -q "onnxruntime==$ORT_VERSION" "onnx==$ONNX_VERSION" numpy
  touch "$ORT_DIR/.done"
fi
ORT_LIB=$(ls "$ORT_DIR"/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION)

# --- Debian tools for the bindings and examples.
need_apt=()
command -v gfortran >/dev/null || need_apt+=(gfortran)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v c++ >/dev/null || need_apt+=(g++)
command -v mpirun >/dev/null || need_apt+=(openmpi-bin libopenmpi-dev)
command -v valgrind >/dev/null || need_apt+=(valgrind)
# PETSc for the optional KSP warm-start example (about 3 minutes of packages)
pkg-config --exists PETSc 2>/dev/null || need_apt+=(petsc-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

cat > "$CACHE/env.sh" <<ENV
# written by scripts/setup.sh
export LIBTORCH="$LIBTORCH"
export PIDDM_ORT_LIBRARY="\${PIDDM_ORT_LIBRARY:-$ORT_LIB}"
export PIDDM_PYTHON="$ORT_DIR/venv/bin/python"
ENV
log "ready: source $CACHE/env.sh"
