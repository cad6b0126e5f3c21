#!/usr/bin/env bash
# Installs the project's local tools into .tools/ (idempotent, fast when done):
#   .tools/venv   Python venv with moto[server], cargo-lambda, ziglang, cfn-lint, aws-sam-cli
# Usage: scripts/tools.sh [python|lambda|sam|all]   (default: all)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"
want="${1:-all}"

log() { printf '[tools] %s\n' "$*" >&2; }

ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    log "creating Python venv in .tools/venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
  fi
}

pip_need() { # pip_need <marker-binary> <packages...>
  local marker="$1"; shift
  if [ ! -x "$venv/bin/$marker" ]; then
    log "installing $*"
    "$venv/bin/pip" install --quiet "$@"
  fi
}

ensure_venv
case "$want" in
  python) pip_need moto_server 'moto[server]>=5.1,<6' ;;
  lambda) pip_need cargo-lambda 'cargo-lambda>=1.8,<2' 'ziglang>=0.13' ;;
  sam)    pip_need cfn-lint 'cfn-lint>=1.20,<2'; pip_need sam 'aws-sam-cli>=1.130,<2' ;;
  all)
    pip_need moto_server 'moto[server]>=5.1,<6'
    pip_need cargo-lambda 'cargo-lambda>=1.8,<2' 'ziglang>=0.13'
    pip_need cfn-lint 'cfn-lint>=1.20,<2'
    pip_need sam 'aws-sam-cli>=1.130,<2'
    ;;
  *) echo "usage: $0 [python|lambda|sam|all]" >&2; exit 2 ;;
esac
