#!/usr/bin/env bash
# Idempotent set-up behind `make ryu-env`: .venv-ryu/ with real Ryu 4.34 and the project.
#
# Ryu 4.34 (its last release, 2020) needs eventlet 0.30.2: later eventlets drop
# eventlet.wsgi.ALREADY_HANDLED, which ryu.app.wsgi imports at load, and eventlet 0.30.2 itself
# fails to import on Python >= 3.10 (socket.timeout became the builtin TimeoutError). So real Ryu
# runs on Python 3.9 only; this venv is built with a Python 3.9 found on the machine (pyenv or
# the system). With none, the step is skipped with one line and exits 0.
# Ryu's sdist needs setuptools < 58 and no build isolation.
# A stamp (hash of setup.cfg, setup.py, this script and the interpreter) makes a repeated run a
# check of a few seconds that changes nothing. Override the interpreter with RYU_PYTHON=/path.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.."
REPO=$(pwd)
VENV="$REPO/.venv-ryu"
STAMP="$VENV/.sdnmig-ryu-installed"
LOG="$VENV/install.log"
PIP_OPTS=(--disable-pip-version-check --no-input)

# Pins for the venv beyond what pip's Requires-Python filter already chooses on 3.9 (there it
# picks redis 7.0.x, zeroconf 0.148.x, pytest 8.4.x, hypothesis 6.141.x: inside setup.cfg's ranges).
# - setuptools < 58: Ryu 4.34's setup (pbr, 2020) needs it; also builds our editable install.
# - eventlet 0.30.2: the last with eventlet.wsgi.ALREADY_HANDLED (Ryu imports it).
# - dnspython < 2: eventlet 0.30.2's greendns needs 1.x (its own metadata says so too).
CONSTRAINTS='setuptools<58
eventlet==0.30.2
dnspython<2
'

die() {
    echo "ryu-env: $*" >&2
    if [ -s "$LOG" ]; then echo "ryu-env: last lines of $LOG:" >&2; tail -n 15 "$LOG" >&2; fi
    exit 1
}

# -- find Python 3.9 --------------------------------------------------------------------------------
ok_python() {  # a working Python 3.9 with venv and ensurepip?
    [ -n "$1" ] && [ -x "$1" ] || return 1
    [ "$("$1" -c 'import sys, venv, ensurepip; print("%d.%d" % sys.version_info[:2])' \
          2>/dev/null)" = 3.9 ]
}

find_python() {
    local roots=() c root
    if [ -n "${RYU_PYTHON:-}" ]; then
        ok_python "$RYU_PYTHON" && { echo "$RYU_PYTHON"; return 0; }
        echo "ryu-env: RYU_PYTHON=$RYU_PYTHON is not a working Python 3.9: searching" >&2
    fi
    # real interpreters first: a pyenv shim fails unless its version is selected
    if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root 2>/dev/null || true)"); fi
    roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv)
    for root in "${roots[@]}"; do
        [ -n "$root" ] && [ -d "$root/versions" ] || continue
        for c in $(ls -d "$root"/versions/3.9*/bin/python3.9 2>/dev/null | sort -rV); do
            ok_python "$c" && { echo "$c"; return 0; }
        done
    done
    for c in /usr/bin/python3.9 /usr/local/bin/python3.9 "$(command -v python3.9 2>/dev/null || true)"; do
        ok_python "$c" && { echo "$c"; return 0; }
    done
    return 1
}

PY=$(find_python) || {
    echo "ryu-env: skipped: no Python 3.9 found (real Ryu 4.34 needs Python 3.9: its eventlet 0.30.2 fails on 3.10+)"
    exit 0
}
PY_VERSION=$("$PY" -c 'import sys; print(sys.version.split()[0])')

# One build at a time: two `make` runs at once would share the venv.
mkdir -p "$VENV"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV/.lock"
    flock 9
fi

want=$( { cat setup.cfg setup.py "$SELF"; echo "$PY $PY_VERSION"; } | sha256sum | cut -c1-16)

verify() {
    "$VENV/bin/ryu-manager" --version >/dev/null 2>&1 || return 1
    [ "$(SDNMIG_PLATFORM=ryu "$VENV/bin/python" -c \
          'import sdnmig.compat as c; print(c.PLATFORM)' 2>/dev/null)" = ryu ]
}

fresh=0
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    if verify; then
        echo "ryu-env: ok ($("$VENV/bin/ryu-manager" --version 2>&1 | tail -n 1), Python $PY_VERSION)"
        exit 0
    fi
    echo "ryu-env: .venv-ryu was built but no longer works: rebuilding it"
    fresh=1
fi

# -- build (or bring up to date) ------------------------------------------------------------------
start=$(date +%s)
rm -f "$STAMP"
have=$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)
if [ "$fresh" = 1 ] || [ "$have" != "$PY_VERSION" ] || [ ! -x "$VENV/bin/pip" ]; then
    echo "ryu-env: building .venv-ryu with $PY (Python $PY_VERSION)"
    find "$VENV" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
    "$PY" -m venv "$VENV" || die "python -m venv failed with $PY"
else
    echo "ryu-env: updating .venv-ryu (Python $PY_VERSION)"
fi
: > "$LOG"
printf '%s' "$CONSTRAINTS" > "$VENV/constraints.txt"
export PIP_CONSTRAINT="$VENV/constraints.txt"
pip_install() { "$VENV/bin/python" -m pip install "${PIP_OPTS[@]}" "$@" >>"$LOG" 2>&1; }

pip_install "setuptools<58" wheel || die "pip install 'setuptools<58' wheel failed"
pip_install --no-build-isolation "ryu==4.34" "eventlet==0.30.2" \
    || die "pip install ryu==4.34 eventlet==0.30.2 failed"
pip_install --no-build-isolation -e ".[ryu,test]" || die "pip install -e '.[ryu,test]' failed"
"$VENV/bin/python" -m pip check >>"$LOG" 2>&1 \
    || echo "ryu-env: warning: 'pip check' reports conflicts (see $LOG)" >&2

"$VENV/bin/python" -c "import redis, zeroconf, pytest, hypothesis" >>"$LOG" 2>&1 \
    || die ".venv-ryu is missing a dependency"
if ! verify; then
    "$VENV/bin/ryu-manager" --version >>"$LOG" 2>&1 || true
    SDNMIG_PLATFORM=ryu "$VENV/bin/python" -c 'import sdnmig.compat' >>"$LOG" 2>&1 || true
    die "Ryu does not start in .venv-ryu"
fi
echo "$want" > "$STAMP"
echo "ryu-env: ok ($("$VENV/bin/ryu-manager" --version 2>&1 | tail -n 1), Python $PY_VERSION," \
     "built in $(( $(date +%s) - start )) s)"
