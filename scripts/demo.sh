#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs on the shipped model
# examples/models/darcy32.onnx (1) the end-to-end demo through the runtime: fresh Darcy problems from
# the numerical solver, one-step generation, forward (a -> u) and inverse (u -> a) solves; and (2) the
# solver examples: Fortran warm start under MPI, C++ (and PETSc) warm start, the inverse initialiser;
# the posterior of a from noisy sensors (MCMC against the surrogate, a short setting); then the same
# demo on every other shipped model (one per PDE family: Poisson, Helmholtz, Burgers, Navier-Stokes).
# Prints the summary tables and writes PNG figures under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source "${PIDDM_CACHE:-$HOME/.cache/piddm}/env.sh"
cargo build --release --workspace
./target/release/piddm-train inspect examples/models/darcy32.onnx | head -3
./target/release/piddm-train demo --model examples/models/darcy32.onnx --problems 16 --out runs/demo
# the other shipped families, the same demo each
for model in examples/models/*.onnx; do
    name=$(basename "$model" .onnx)
    case "$name" in darcy32 | *.*) continue ;; esac
    echo
    ./target/release/piddm-train demo --model "$model" --problems 8 --out "runs/demo-$name"
done
echo
bash scripts/examples.sh runs/examples
