#!/usr/bin/env bash
# Gradescope runs this once, as root and with network, while it builds the autograder's image
# (Ubuntu). It installs bubblewrap (the grading sandbox), Python 3.11+ and the kit bundled in kit/,
# with the versions the kit was tested with (kit/constraints.txt).
set -euo pipefail
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"  # /autograder/source
ROOT="${AUTOGRADER_ROOT:-/autograder}"
KIT="$SOURCE/kit"
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq bubblewrap python3 python3-venv python3-pip >/dev/null

PYTHON=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null \
    && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    PYTHON="$candidate"
    break
  fi
done
if [ -z "$PYTHON" ]; then  # Ubuntu 22.04 ships Python 3.10; 3.11 is in its universe component
  apt-get install -y -qq python3.11 python3.11-venv >/dev/null
  PYTHON=python3.11
fi

"$PYTHON" -m venv "$ROOT/venv"
PIP=("$ROOT/venv/bin/python" -m pip install -q)
"${PIP[@]}" --upgrade pip
# Gradescope has no GPU: the CPU build of torch spares gigabytes of CUDA libraries.
TORCH="$(grep -E '^torch==' "$KIT/constraints.txt" || echo torch)"
"${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu "$TORCH"
"${PIP[@]}" -c "$KIT/constraints.txt" -e "$KIT"

# The kit imports and finds its curriculum, exercises and hidden cases.
cd "$KIT" && LADDER_ROOT="$KIT" "$ROOT/venv/bin/python" -m graders.cli list >/dev/null
