#!/usr/bin/env bash
# The solver examples on the shipped model: installs piddm's C/C++/Fortran package into a build
# directory, builds examples/ against it as a user's project would, writes fresh Darcy problems with
# the numerical solver, runs the Fortran warm start under `mpirun -np 2`, the C++ warm start, the
# inverse example (after checking its adjoint gradient), and prints one summary table with figures.
#   scripts/examples.sh [OUT_DIR]            (after scripts/setup.sh and cargo build --release)
# Smaller runs: PIDDM_EXAMPLES_PROBLEMS (50), PIDDM_EXAMPLES_STEPS (the warm starts' surrogate steps:
# the card's), PIDDM_EXAMPLES_INVERSE_STEPS (the inverse initialiser's: 0, the one-call answers, whose
# mean over seeds is the start), PIDDM_EXAMPLES_SEEDS (8), PIDDM_EXAMPLES_ITERATIONS (150),
# PIDDM_EXAMPLES_INVERSE (4 inverse problems); PIDDM_EXAMPLES_POSTERIOR ("COUNT SENSORS NOISE CHAINS
# STEPS ANSWERS" of the posterior example: "2 50 0.01 2 2000 16", a short setting; the reference runs
# in examples/RESULTS.md take hours); PIDDM_EXAMPLES_BUILD (build/examples) holds the builds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/examples}
build=${PIDDM_EXAMPLES_BUILD:-build/examples}
model=${PIDDM_EXAMPLES_MODEL:-examples/models/darcy32.onnx}
count=${PIDDM_EXAMPLES_PROBLEMS:-50}
steps=${PIDDM_EXAMPLES_STEPS:-0}
seeds=${PIDDM_EXAMPLES_SEEDS:-8}
iterations=${PIDDM_EXAMPLES_ITERATIONS:-150}
inverse=${PIDDM_EXAMPLES_INVERSE:-4}
inverse_steps=${PIDDM_EXAMPLES_INVERSE_STEPS:-0}
read -r -a posterior <<<"${PIDDM_EXAMPLES_POSTERIOR:-2 50 0.01 2 2000 16}"
lib=$PWD/target/release/libpiddm.so
train=${PIDDM_TRAIN:-./target/release/piddm-train}
[ -f "$lib" ] || { echo "examples: $lib not found: run cargo build --release first" >&2; exit 1; }
mkdir -p "$out" "$build"
out=$(cd "$out" && pwd)
build=$(cd "$build" && pwd)

cmake -S bindings -B "$build/bindings" -DPIDDM_LIBRARY="$lib" >"$build/cmake.log"
cmake --build "$build/bindings" >>"$build/cmake.log"
cmake --install "$build/bindings" --prefix "$build/prefix" >>"$build/cmake.log"
cmake -S examples -B "$build/programs" -DCMAKE_PREFIX_PATH="$build/prefix" >>"$build/cmake.log"
cmake --build "$build/programs" >>"$build/cmake.log" || { cat "$build/cmake.log" >&2; exit 1; }
bin=$build/programs

"$train" problems --model "$model" --n "$count" --out "$out/problems.f32"
steps_arg=()
[ "$steps" != 0 ] && steps_arg=("$steps")

# OpenMPI refuses to run as root unless told; containers often are root.
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpirun -np 2 --oversubscribe "$bin/darcy_warm_start" "$model" "$out/problems.f32" "$out" "$count" "${steps_arg[@]}"
"$bin/darcy_warm_start_cpp" "$model" "$out/problems.f32" "$out" "$count" "${steps_arg[@]}"
if [ -x "$bin/darcy_warm_start_petsc" ]; then
  "$bin/darcy_warm_start_petsc" "$model" "$out/problems.f32" "$out" "$count" "${steps_arg[@]}"
fi
"$bin/darcy_inverse" --check-gradient "$out/problems.f32"
"$bin/darcy_inverse" --check-fair-timing
"$bin/darcy_inverse" "$model" "$out/problems.f32" "$out" "$inverse" 0.05 "$seeds" "$iterations" "$inverse_steps"
"$bin/darcy_posterior" --check-linear-gaussian
"$bin/darcy_posterior" --check-sign-inverse
"$bin/darcy_posterior" --check-tempering
"$bin/darcy_posterior" "$model" "$out/problems.f32" "$out" "${posterior[@]}"
echo
"$train" examples-report "$out"
