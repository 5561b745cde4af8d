#!/usr/bin/env bash
# Runs every test: the Rust tests, then the integration suite, which drives the real `strata`
# binary with kcat, confluent-kafka and kafka-python.
#
# Works on a fresh Debian bookworm machine with a Rust toolchain and Python 3.11: installs kcat
# with apt when it is missing and the Python clients into a virtualenv.
#
# Environment:
#   CARGO_TARGET_DIR  cargo's build directory (default: target/ in the repository)
#   STRATA_VENV       the virtualenv to create or reuse (default: .venv in the repository)
#   PYTHON            the interpreter that creates it (default: python3.11, else python3)
#   STRATA_BIN        the broker binary under test (default: $CARGO_TARGET_DIR/debug/strata)
# Extra arguments go to pytest, e.g. `scripts/test.sh -k kcat -x`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$root/$CARGO_TARGET_DIR" ;; esac
venv="${STRATA_VENV:-$root/.venv}"

step() { printf '\n==> %s\n' "$*"; }

# ---- peers ------------------------------------------------------------------------------------
# need COMMAND PACKAGE: installs PACKAGE with apt when COMMAND is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return
  step "installing $2"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$2"
}
need kcat kcat
kcat -V 2>&1 | sed -n 's/^Version/kcat version/p'
# The network-partition test (test_partition.py) builds network namespaces with `ip`.
need ip iproute2
# test_page_cache.py reads a segment file's resident pages with `fincore`.
need fincore util-linux

# ---- Python clients ---------------------------------------------------------------------------
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
fi
# The Python clients for the integration suite, and moto (the S3-API server process that the
# tiering crate's object-store conformance tests start).
requirements="$root/tests/integration/requirements.txt"
tiering_requirements="$root/tiering/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(cat "$requirements" "$tiering_requirements" | sha256sum | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version)')"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1 \
    || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "creating $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$requirements" -r "$tiering_requirements"
  printf '%s' "$want" >"$stamp"
fi

# ---- Rust -------------------------------------------------------------------------------------
# `cargo test` links target/debug/strata only when a tests/*.rs target needs it, and a plain
# `cargo build` afterwards would rebuild dependencies with different features (it leaves out
# dev-dependencies). Building exactly the targets `cargo test` builds, plus the binaries,
# resolves features the same way: the binary comes out of the same build, and `cargo test`
# then compiles nothing more.
step "cargo build --workspace --lib --bins --tests --examples"
cargo build --workspace --lib --bins --tests --examples

step "cargo test --workspace"
# The tiering tests find moto in the test virtualenv.
STRATA_VENV="$venv" cargo test --workspace

# ---- integration ------------------------------------------------------------------------------
export STRATA_BIN="${STRATA_BIN:-$CARGO_TARGET_DIR/debug/strata}"
step "integration tests against $STRATA_BIN"
"$venv/bin/python" -m pytest "$root/tests/integration" -v --timeout=300 "$@"
