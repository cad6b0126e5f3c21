#!/usr/bin/env bash
# Runs the gateway locally, end to end, installing what it needs first:
#   moto_server (DynamoDB + Secrets Manager), the table and key set, and the
#   gateway's Routers on one local listener, as API Gateway would route them.
# Prints the MCP URL to point a client at. Ctrl-C stops everything.
#
# Environment: GATEWAY_PORT (default 8080), MOTO_PORT (default 4566).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
gateway_port="${GATEWAY_PORT:-8080}"
moto_port="${MOTO_PORT:-4566}"
state_dir="$root/.local"
mkdir -p "$state_dir"

scripts/tools.sh python node
venv="$root/.tools/venv"

echo "building the gateway (first run: a few minutes)..."
cargo build --quiet -p gateway-admin
admin="$root/target/debug/gateway-admin"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_port() { # wait_port <port> <name>
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not start on 127.0.0.1:$1 (see $state_dir/*.log)" >&2
  exit 1
}

"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$state_dir/moto.log" 2>&1 &
pids+=($!)
wait_port "$moto_port" moto_server

export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1
export TABLE_NAME=mcp-oauth-gateway
"$admin" init --table "$TABLE_NAME" | tee "$state_dir/init.txt"
KEYSET_SECRET_ARN="$(sed -n 's/^KEYSET_SECRET_ARN=//p' "$state_dir/init.txt")"
export KEYSET_SECRET_ARN
export INBOUND_AUTH_MODE=dev
export PUBLIC_BASE_URL="http://127.0.0.1:$gateway_port"
export RUST_LOG="${RUST_LOG:-info}"

"$admin" serve --listen "127.0.0.1:$gateway_port" >"$state_dir/gateway.log" 2>&1 &
pids+=($!)
wait_port "$gateway_port" gateway

cat <<MSG

mcp-oauth-gateway is running locally.

  MCP URL (point your MCP client here):  $PUBLIC_BASE_URL/mcp
  Protected Resource Metadata:           $PUBLIC_BASE_URL/.well-known/oauth-protected-resource/mcp
  OAuth callback URL:                    $PUBLIC_BASE_URL/oauth/callback
  Local AWS endpoint (moto):             $AWS_ENDPOINT_URL  (table $TABLE_NAME)

Inbound auth is in development mode: no token needed; the user is the
X-Gateway-Dev-User header (default "dev-user").
Logs: $state_dir/gateway.log. Press Ctrl-C to stop.
MSG
wait "${pids[@]}"
