#!/usr/bin/env bash
# Runs the benchmarks and writes docs/PERFORMANCE.md (command, machine, date,
# and every table). Each figure is measured beside its baseline in the same
# run; these are numbers, not pass/fail tests.
#
# Usage: scripts/bench.sh        (BENCH_GRANTS=10000 by default for the refresh run)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export SAM_CLI_TELEMETRY=0 CARGO_TERM_COLOR=never
scripts/tools.sh python lambda
venv="$root/.tools/venv"
export PATH="$venv/bin:$PATH" CARGO_ZIGBUILD_ZIG_PATH="$venv/bin/python-zig"
export BENCH_GRANTS="${BENCH_GRANTS:-10000}"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
{
  echo "# Performance"
  echo
  echo "Written by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//' || echo unknown CPU))."
  echo "Each figure is measured beside its baseline in the same run, because these machines are noisy."
  echo
} >"$out"

echo "building release binaries (host, for cold starts; arm64, for sizes)..." >&2
cargo build --release --locked -p mcp-proxy -p oauth-callback -p token-refresh >&2
cargo lambda build --release --arm64 --locked -p mcp-proxy -p oauth-callback -p token-refresh >&2

{
  echo "## Size"
  echo
  echo "Release arm64 \`bootstrap\` of each function (\`cargo lambda build --release --arm64\`) and its zip (deflate, level 9), as uploaded."
  echo
  python3 - <<'PY'
import io, os, zipfile
print("| function | binary | zip | zip budget (5 MB) |")
print("|---|---|---|---|")
for f in ["mcp-proxy", "oauth-callback", "token-refresh"]:
    p = f"target/lambda/{f}/bootstrap"
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(p, "bootstrap")
    size, zipped = os.path.getsize(p), len(b.getvalue())
    print(f"| {f} | {size/1e6:.2f} MB | {zipped/1e6:.2f} MB | {'met' if zipped <= 5e6 else 'over by %.0f kB' % ((zipped - 5e6) / 1e3)} |")
PY
  echo
} >>"$out"

for bench in cold_start proxy_overhead refresh catalog; do
  echo "running cargo bench --bench $bench..." >&2
  echo "<!-- cargo bench -p gateway-tests --bench $bench -->" >>"$out"
  cargo bench --locked -p gateway-tests --bench "$bench" 2>/dev/null | sed -n '/^## \|^|/,$p' | grep -v '^test result\|^running 0' >>"$out"
  echo >>"$out"
done

cat docs/performance-notes.md >>"$out"
cp "$out" docs/PERFORMANCE.md
cat docs/PERFORMANCE.md
