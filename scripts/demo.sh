#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the end-to-end demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source "${PIDDM_CACHE:-$HOME/.cache/piddm}/env.sh"
cargo build --release --workspace
# The whole method on the tiny preset (seconds): data, teacher, students, evaluation, figures.
./target/release/piddm-train pipeline --preset tiny --out runs/demo-tiny
echo "figures and tables: runs/demo-tiny/eval/"
