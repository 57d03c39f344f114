#!/usr/bin/env bash
# Installs what hitl-sip needs on a fresh Debian machine, idempotently:
#  - Debian packages (only when running as root and something is missing),
#  - the Python virtual environment in .venv with the package and its dev extras,
#  - Node.js >= 20.19 with npm: the system's, else a pinned one installed into .node/ from the
#    npm registry (scripts/node.sh),
#  - the agent dashboard's npm packages (as locked) and its build (agent-app/dist).
# Used by `make run` (bootstrap.sh run) and `make test` (bootstrap.sh test: adds Chromium for
# the browser tests); safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-run}
APT_PACKAGES=(sip-tester baresip-core espeak-ng sox pocketsphinx-testdata kamailio
              kamailio-tls-modules rtpengine-daemon openssl gcc python3-dev)
if [[ $MODE == test ]]; then
  APT_PACKAGES+=(chromium fonts-dejavu-core redis-server)
fi
PYTHON=${PYTHON:-python3}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # hitl-sip runs Kamailio and rtpengine itself: no package may start its system service
    # while installing (invoke-rc.d asks policy-rc.d; 101 = "action forbidden")
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [[ ! -e $policy ]]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    apt-get update -qq
    installed=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || installed=$?
    if [[ -n $made_policy ]]; then rm -f "$policy"; fi
    if ((installed)); then exit "$installed"; fi
    # rtpengine-daemon enables its service for the next boot: it would take the ng port and
    # try the kernel module; hitl-sip starts its own rtpengine (userspace, its own config)
    if [[ " ${missing[*]} " == *" rtpengine-daemon "* ]]; then
      echo "bootstrap: disabling the rtpengine-daemon system service (hitl-sip starts its own)"
      if command -v systemctl >/dev/null; then  # works with systemd down too (no --now)
        systemctl disable rtpengine-daemon >/dev/null 2>&1 || true
        systemctl stop rtpengine-daemon >/dev/null 2>&1 || true
      elif command -v update-rc.d >/dev/null; then
        update-rc.d rtpengine-daemon disable >/dev/null 2>&1 || true
      fi
    fi
    # hitl-sip runs Kamailio itself (the SIP front); a system service would hold port 5060
    if [[ " ${missing[*]} " == *" kamailio "* ]] && command -v systemctl >/dev/null \
        && systemctl is-active --quiet kamailio 2>/dev/null; then
      echo "bootstrap: stopping and disabling the kamailio system service (hitl-sip starts its own)"
      systemctl disable --now kamailio >/dev/null 2>&1 || true
    fi
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
# (setup.py builds the C core, hitl_sip/media/_rtpcore.c: a changed source is built again)
if [[ ! -f $stamp || pyproject.toml -nt $stamp || constraints.txt -nt $stamp || setup.py -nt $stamp \
      || hitl_sip/media/_rtpcore.c -nt $stamp ]]; then
  echo "bootstrap: installing Python dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev,azure]' 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import pjsua2, aiohttp, aiortc, socketio, numpy, hitl_sip.media._rtpcore" 
  touch "$stamp"
fi

# The dashboard: Angular 21 needs Node >= 20.19 with npm (Debian 12's own nodejs is 18). The
# system's when it will do, else a pinned Node and npm installed into .node/ from the npm
# registry (scripts/node.sh); the chosen one is first on PATH for npm install and ng build.
# shellcheck source=scripts/node.sh
source scripts/node.sh
hitl_sip_node_select
app=agent-app
if [[ ! -f $app/node_modules/.package-lock.json || $app/package-lock.json -nt $app/node_modules/.package-lock.json ]]; then
  # The locked tree, exactly, writing nothing: `npm ci` refuses this lockfile because the
  # registry here lacks some other platforms' optional builds of rollup and msgpackr-extract
  # (so npm cannot record them), while `npm install --no-save` installs what is locked.
  echo "bootstrap: installing the dashboard's npm packages (locked versions)"
  (cd $app && npm install --no-save --no-audit --no-fund --loglevel=error)
fi
index=$app/dist/agent-app/browser/index.html
if [[ ! -f $index ]] || [[ -n $(find $app/src $app/public $app/angular.json $app/package-lock.json \
    $app/tsconfig.json $app/tsconfig.app.json -newer "$index" -print -quit) ]]; then
  echo "bootstrap: building the agent dashboard (ng build)"
  (cd $app && npx ng build --progress=false >/dev/null)
fi
