#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs first:
#   formatting and lints, unit and integration tests (against real local
#   servers), template checks, and the arm64 Lambda build.
# Usage: scripts/test.sh            (everything; what CI runs)
#        SKIP_ARM64=1 scripts/test.sh  (skip the release cross-build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
step() { printf '\n==> %s\n' "$*"; }
export SAM_CLI_TELEMETRY=0 CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A CI run builds once: incremental-compilation state (about 0.9 GB for the
# workspace's test binaries) would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi

# A fresh clone needs about 5 GB (tools, the debug test binaries, the arm64
# release build); a full disk shows up late, as a linker crash. Say so first.
mkdir -p "${CARGO_TARGET_DIR:-$root/target}"
free_kb="$(df -Pk "${CARGO_TARGET_DIR:-$root/target}" 2>/dev/null | awk 'NR == 2 { print $4 }' || true)"
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((5 * 1024 * 1024)) ]; then
  printf 'warning: %s MB free where the suite builds; a fresh run needs about 5 GB\n' "$((free_kb / 1024))" >&2
fi

step "tools (Python venv: moto, MCP SDK, cfn-lint, SAM CLI, cargo-lambda, zig, actionlint; cfn-guard; Node peers; chromium)"
scripts/tools.sh all
venv="$root/.tools/venv"
export PATH="$venv/bin:$PATH"
export CARGO_ZIGBUILD_ZIG_PATH="$venv/bin/python-zig"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee .tools/cargo-test.log
# A closing line CI readers understand, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\ncargo tests: %d passed, %d failed\n", p, f }' .tools/cargo-test.log

# cfn-lint, sam validate, the cfn-guard rules (and broken copies they must
# refuse), actionlint on the pipeline example.
scripts/check-template.sh

if [ "${SKIP_ARM64:-}" != 1 ]; then
  step "cargo lambda build --release --arm64"
  cargo lambda build --release --arm64 --locked -p mcp-proxy -p oauth-callback -p token-refresh
  for f in mcp-proxy oauth-callback token-refresh; do
    python3 -c 'import sys; b = open(sys.argv[1], "rb").read(20); sys.exit(0 if b[:4] == b"\x7fELF" and b[18:20] == b"\xb7\x00" else 1)' \
      "target/lambda/$f/bootstrap" || { echo "target/lambda/$f/bootstrap is not an arm64 ELF binary" >&2; exit 1; }
    printf '%-16s %s bytes\n' "$f" "$(stat -c %s "target/lambda/$f/bootstrap")"
  done
fi

printf '\nall checks passed\n'
