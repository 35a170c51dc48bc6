#!/usr/bin/env bash
# Installs ANEForge from this checkout: the Python package (the extension is
# built in release mode by maturin through pip) and the `aneforge` command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"
"$python" -m pip install -q --disable-pip-version-check .
# The CLI is its own crate (clap stays out of the extension); it shares the
# workspace's target directory so dependencies build once.
cargo install -q --locked --force --path crates/aneforge-cli --target-dir target
command -v aneforge >/dev/null || echo "note: add $(dirname "$(command -v cargo)") to PATH to use the aneforge command" >&2
