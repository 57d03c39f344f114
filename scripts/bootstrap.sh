#!/usr/bin/env bash
# Installs what hitl-sip needs on a fresh Debian machine, idempotently:
#  - Debian packages (only when running as root and something is missing),
#  - the Python virtual environment in .venv with the package and its dev extras.
# Used by `make run` and `make test`; safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(sip-tester baresip-core espeak-ng sox pocketsphinx-testdata)
PYTHON=${PYTHON:-python3}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages (run as root or install them): ${missing[*]}" >&2
    exit 1
  fi
fi

stamp=.venv/.hitl-sip-installed
if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "bootstrap: installing Python dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e '.[dev,azure]' 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import pjsua2, aiohttp, aiortc, socketio, numpy" 
  touch "$stamp"
fi
