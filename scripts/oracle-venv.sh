#!/usr/bin/env bash
# Create (or reuse) the Python venv that holds coremltools, the outside
# reference the MIL writer is tested against.
#
# coremltools 9.0 needs numpy<2 (numpy 2 breaks parts of its value
# inference), which may clash with the numpy the rest of the project uses, so
# the oracle lives in its own venv. Idempotent: a venv that already imports
# coremltools 9.0 is left alone. Prints the venv's python path on stdout.
#
#   scripts/oracle-venv.sh            # create if needed, print the python path
#   ANEFORGE_ORACLE_VENV=/x scripts/oracle-venv.sh   # use another location
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ANEFORGE_ORACLE_VENV:-$root/.venv-oracle}"
py="$venv/bin/python"
python="${PYTHON:-python3}"

ready() {
    [ -x "$py" ] && "$py" - <<'PY' >/dev/null 2>&1
import logging, sys
logging.disable(logging.CRITICAL)
import numpy, coremltools
sys.exit(0 if coremltools.__version__ == "9.0" and int(numpy.__version__.split(".")[0]) < 2 else 1)
PY
}

if ! ready; then
    echo "oracle-venv: installing coremltools 9.0 + numpy<2 into $venv" >&2
    "$python" -m venv "$venv" >&2
    "$py" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$py" -m pip install --quiet --disable-pip-version-check \
        "coremltools==9.0" "numpy<2" "pytest" >&2
    if ! ready; then
        echo "oracle-venv: coremltools 9.0 does not import in $venv" >&2
        exit 1
    fi
fi
echo "$py"
