#!/usr/bin/env bash
# `make wheel-check`: build the one wheel (abi3: every CPython >= 3.11), install it into a fresh
# venv where no Rust toolchain is on PATH, and smoke-test it there (scripts/wheel_smoke.py).
#
# The build reuses cargo's release artifacts when `make install` has just built the same
# module (abi3 builds do not depend on the interpreter), so after `make install` it takes about
# a second; from a clean target directory it compiles everything (about 30 s on 2 cores).
#
# The venv's interpreter is WHEEL_PYTHON if set, else the newest CPython 3.12+ found (on PATH or
# installed by pyenv), so the wheel is tried on a version it was not built with; else $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=target/wheel-check
started=$SECONDS

step() {
    printf 'wheel-check: [%3ds] %s\n' "$((SECONDS - started))" "$*"
}

usable() {
    # A CPython that can make a venv with pip: Debian's may lack ensurepip.
    "$1" -c 'import ensurepip, sys, venv; sys.exit(sys.implementation.name != "cpython")' \
        >/dev/null 2>&1
}

pick_python() {
    if [[ -n ${WHEEL_PYTHON:-} ]]; then
        echo "$WHEEL_PYTHON"
        return
    fi
    local minor candidate
    for minor in 15 14 13 12; do
        for candidate in "python3.$minor" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3."$minor".*/bin/python3."$minor"; do
            if usable "$candidate"; then
                echo "$candidate"
                return
            fi
        done
    done
    echo "$PYTHON"
}

rm -rf "$work"
step "building the wheel"
if "$PYTHON" -m maturin --version >/dev/null 2>&1; then
    maturin=("$PYTHON" -m maturin)
else
    # `python -m maturin` looks for its binary in the interpreter's own scripts directory only:
    # a venv that sees maturin through --system-site-packages has to use the one on PATH.
    maturin=(maturin)
fi
"${maturin[@]}" build --release --out "$work/dist"
shopt -s nullglob
wheels=("$work"/dist/*.whl)
if [[ ${#wheels[@]} -ne 1 || ${wheels[0]} != *-cp311-abi3-*.whl ]]; then
    echo "wheel-check: expected exactly one *-cp311-abi3-*.whl, got: ${wheels[*]:-none}" >&2
    exit 1
fi
wheel=$(realpath "${wheels[0]}")

python=$(pick_python)
step "creating a venv with $python ($("$python" -c 'import sys; print(sys.version.split()[0])'))"
"$python" -m venv "$work/venv"
venv=$(realpath "$work/venv")

# From here on only the venv's bin and the system's are on PATH: no cargo, rustc or maturin, so
# nothing could be compiled; pip is also told to take wheels only.
isolated=(env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME -u CARGO_HOME -u RUSTUP_HOME
    -u PYO3_PYTHON "PATH=$venv/bin:/usr/bin:/bin")
if "${isolated[@]}" sh -c 'command -v cargo || command -v rustc'; then
    echo "wheel-check: a Rust toolchain is on the venv's PATH" >&2
    exit 1
fi
step "installing $(basename "$wheel") with no Rust toolchain on PATH"
"${isolated[@]}" python -m pip install --quiet --only-binary=:all: "$wheel"

step "smoke test"
# -I: the script's directory and the current one stay off sys.path; run outside the tree.
smoke=$(realpath scripts/wheel_smoke.py)
(cd "$work" && "${isolated[@]}" python -I "$smoke")
step "done"
