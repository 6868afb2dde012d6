#!/usr/bin/env bash
# All of piddm's tests: installs what is missing, then formatting, lints and every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source "${PIDDM_CACHE:-$HOME/.cache/piddm}/env.sh"
cargo fmt --all -- --check
cargo clippy --workspace --release --all-targets -- -D warnings
cargo test --workspace --release
