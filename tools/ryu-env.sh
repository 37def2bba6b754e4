#!/usr/bin/env bash
# Idempotent set-up behind `make ryu-env`: .venv-ryu/ with real Ryu 4.34 and the project.
#
# Ryu 4.34 (its last release) does not run on Python >= 3.11, so this venv is built with a
# Python 3.9 (preferred) or 3.10 found on the machine (pyenv or the system); with neither, the
# step is skipped with one line and exits 0. Ryu's sdist needs setuptools < 58 and no build
# isolation; its runtime needs eventlet 0.30.2. A stamp (hash of setup.cfg, setup.py, this script
# and the interpreter) makes a repeated run a quick check that changes nothing.
# Override the interpreter with RYU_PYTHON=/path/to/python3.x.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV="$REPO/.venv-ryu"
STAMP="$VENV/.sdnmig-ryu-installed"
PIP_OPTS=(-q --disable-pip-version-check --no-input)

die() { echo "ryu-env: $*" >&2; exit 1; }

# Pins for the Python 3.9/3.10 venv, beyond what pip's Requires-Python filter already chooses.
# - setuptools < 58: Ryu 4.34's setup.py (pbr) breaks on newer setuptools.
# - eventlet 0.30.2: newer eventlet drops what Ryu 4.34's hub uses.
# - pip < 25: keeps the legacy `setup.py develop` editable install that setuptools < 58 needs.
CONSTRAINTS='setuptools<58
eventlet==0.30.2
pip<25
'

# -- find Python 3.9 or 3.10 ----------------------------------------------------------------------
ok_python() {  # prints the interpreter's "3.x" if it is a working 3.9/3.10 with venv, else fails
    local v
    [ -n "$1" ] && [ -x "$1" ] || return 1
    v=$("$1" -c 'import sys, venv, ensurepip; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
        || return 1
    case "$v" in 3.9|3.10) echo "$v" ;; *) return 1 ;; esac
}

find_python() {
    local roots=() c
    if [ -n "${RYU_PYTHON:-}" ]; then
        ok_python "$RYU_PYTHON" >/dev/null && { echo "$RYU_PYTHON"; return 0; }
        echo "ryu-env: RYU_PYTHON=$RYU_PYTHON is not a working Python 3.9/3.10: searching" >&2
    fi
    if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root 2>/dev/null || true)"); fi
    roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv" "/root/.pyenv")
    for minor in 9 10; do
        # real interpreters first: a pyenv shim fails unless that version is selected
        for root in "${roots[@]}"; do
            [ -n "$root" ] || continue
            for c in $(ls -d "$root"/versions/3."$minor"*/bin/python3."$minor" 2>/dev/null | sort -rV); do
                ok_python "$c" >/dev/null && { echo "$c"; return 0; }
            done
        done
        for c in "/usr/bin/python3.$minor" "/usr/local/bin/python3.$minor" \
                 "$(command -v "python3.$minor" 2>/dev/null || true)"; do
            ok_python "$c" >/dev/null && { echo "$c"; return 0; }
        done
    done
    return 1
}

PY=$(find_python) || {
    echo "ryu-env: skipped: no Python 3.9 or 3.10 found (real Ryu 4.34 needs Python <= 3.10)"
    exit 0
}
PY_VERSION=$("$PY" -c 'import sys; print(sys.version.split()[0])')

# One build at a time (two `make` runs at once would share the venv).
mkdir -p "$VENV"
exec 9>"$VENV/.lock"
flock 9

want=$( { cat setup.cfg setup.py "$0"; echo "$PY $PY_VERSION"; } | sha256sum | cut -c1-16)

verify() {
    "$VENV/bin/ryu-manager" --version >/dev/null 2>&1 || return 1
    [ "$(cd "$REPO" && SDNMIG_PLATFORM=ryu "$VENV/bin/python" -W ignore \
          -c 'import sdnmig.compat as c; print(c.PLATFORM)' 2>/dev/null)" = ryu ]
}

if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && verify; then
    echo "ryu-env: ok ($("$VENV/bin/ryu-manager" --version 2>&1 | tail -1), Python $PY_VERSION, cached)"
    exit 0
fi

# -- build ------------------------------------------------------------------------------------------
start=$(date +%s)
rm -f "$STAMP"
have=$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)
if [ "$have" != "$PY_VERSION" ] || [ ! -x "$VENV/bin/pip" ]; then
    echo "ryu-env: building .venv-ryu with $PY (Python $PY_VERSION)"
    find "$VENV" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
    "$PY" -m venv "$VENV" || die "python -m venv failed with $PY"
else
    echo "ryu-env: updating .venv-ryu (Python $PY_VERSION)"
fi
printf '%s' "$CONSTRAINTS" > "$VENV/constraints.txt"
export PIP_CONSTRAINT="$VENV/constraints.txt"
VPIP=("$VENV/bin/python" -m pip)

"${VPIP[@]}" install "${PIP_OPTS[@]}" "setuptools<58" wheel \
    || die "pip install setuptools<58 wheel failed"
"${VPIP[@]}" install "${PIP_OPTS[@]}" --no-build-isolation "ryu==4.34" "eventlet==0.30.2" \
    || die "pip install ryu==4.34 eventlet==0.30.2 failed"
"${VPIP[@]}" install "${PIP_OPTS[@]}" --no-build-isolation -e ".[ryu,test]" \
    || die "pip install -e .[ryu,test] into .venv-ryu failed"
"${VPIP[@]}" check >/dev/null || echo "ryu-env: warning: 'pip check' reports conflicts in .venv-ryu" >&2

verify || {
    "$VENV/bin/ryu-manager" --version || true
    (SDNMIG_PLATFORM=ryu "$VENV/bin/python" -c 'import sdnmig.compat as c; print(c.PLATFORM)') || true
    die ".venv-ryu does not work: see the errors above"
}
"$VENV/bin/python" -c "import redis, zeroconf, pytest, hypothesis" \
    || die ".venv-ryu is missing a dependency"
echo "$want" > "$STAMP"
echo "ryu-env: ok ($("$VENV/bin/ryu-manager" --version 2>&1 | tail -1), Python $PY_VERSION," \
     "built in $(( $(date +%s) - start )) s)"
