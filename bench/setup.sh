#!/usr/bin/env bash
# Creates bench/.venv with the peers pinned in bench/requirements.txt (JAX for CPU, PyTorch,
# NumPy). Idempotent: does nothing when the venv already imports the pinned versions.
#   bench/setup.sh            PYTHON=python3.11 bench/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
py="$venv/bin/python"

installed_ok() {
    [ -x "$py" ] && "$py" - "$here/requirements.txt" <<'PY' 2>/dev/null
import re, sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = re.match(r"([A-Za-z0-9_.-]+)(?:\[.*\])?==(\S+)", line).groups()
    have = version(name).split("+")[0]
    if have != want:
        sys.exit(f"{name} {have} != {want}")
import jax, torch, numpy  # noqa: F401  (imports, not just metadata)
PY
}

if installed_ok; then
    echo "bench/setup.sh: $venv is up to date"
    exit 0
fi
if [ ! -x "$py" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$py" -m pip install --quiet --upgrade pip
# ~3.1 GB of wheels (torch's CUDA dependencies are most of it); about 2 minutes here.
"$py" -m pip install --quiet -r "$here/requirements.txt"
installed_ok || { echo "bench/setup.sh: the peers do not import after installing" >&2; exit 1; }
echo "bench/setup.sh: installed into $venv:"
"$py" -m pip list 2>/dev/null | grep -E -i '^(jax|jaxlib|numpy|torch) '
