#!/usr/bin/env bash
# Runs the gateway locally, end to end, installing what it needs first:
#   - moto (tests/python/moto_serial.py: moto_server, one request at a time, so
#     conditional writes are atomic as in DynamoDB) as DynamoDB and Secrets
#     Manager, with the table and key set;
#   - a demo authorization server (oidc-provider) and a demo OAuth-protected
#     MCP server (the official Python SDK), registered as target "demo" by
#     discovery and Dynamic Client Registration;
#   - the gateway's Routers on one local listener, as API Gateway routes them.
# Prints the MCP URL to point a client at, and a consent link to try in a
# browser. Ctrl-C stops everything.
#
# Environment: GATEWAY_PORT (8080), MOTO_PORT (4566), DEMO_AS_PORT (8100),
# DEMO_MCP_PORT (8200).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
gateway_port="${GATEWAY_PORT:-8080}"
moto_port="${MOTO_PORT:-4566}"
as_port="${DEMO_AS_PORT:-8100}"
mcp_port="${DEMO_MCP_PORT:-8200}"
state_dir="$root/.local"
mkdir -p "$state_dir"

scripts/tools.sh python node
venv="$root/.tools/venv"

echo "building the gateway (first run: a few minutes)..."
cargo build --quiet --locked -p gateway-admin
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

# Refuse ports something else already listens on: the steps below would
# talk to it instead of the servers started here.
for port in "$moto_port" "$gateway_port" "$as_port" "$mcp_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "127.0.0.1:$port is already in use; stop what listens there or choose other ports (GATEWAY_PORT, MOTO_PORT, DEMO_AS_PORT, DEMO_MCP_PORT)" >&2
    exit 1
  fi
done

"$venv/bin/python" tests/python/moto_serial.py -H 127.0.0.1 -p "$moto_port" >"$state_dir/moto.log" 2>&1 &
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

# The demo authorization server and OAuth-protected MCP server.
cat >"$state_dir/demo-as.json" <<JSON
{"port": $as_port, "clients": [], "registration": true, "resourceScopes": "read write", "accessTokenTtl": 3600}
JSON
node tests/node/oidc-server.mjs "$state_dir/demo-as.json" >"$state_dir/demo-as.log" 2>&1 &
pids+=($!)
wait_port "$as_port" "demo authorization server"
"$venv/bin/python" tests/python/demo_mcp_server.py --port "$mcp_port" --issuer "http://127.0.0.1:$as_port" \
  >"$state_dir/demo-mcp.log" 2>&1 &
pids+=($!)
wait_port "$mcp_port" "demo MCP server"

# Register it: discovery from the MCP URL, then Dynamic Client Registration.
"$admin" target add demo --display-name "Demo MCP server" \
  --mcp-url "http://127.0.0.1:$mcp_port/mcp" --allow-insecure-local
link="$("$admin" connect --user dev-user --target demo)"

cat <<MSG

mcp-oauth-gateway is running locally.

  MCP URL (point your MCP client here):  $PUBLIC_BASE_URL/mcp
  Protected Resource Metadata:           $PUBLIC_BASE_URL/.well-known/oauth-protected-resource/mcp
  OAuth callback URL:                    $PUBLIC_BASE_URL/oauth/callback
  Local AWS endpoint (moto):             $AWS_ENDPOINT_URL  (table $TABLE_NAME)
  Demo authorization server:             http://127.0.0.1:$as_port  (any login name, any password)
  Demo OAuth-protected MCP server:       http://127.0.0.1:$mcp_port/mcp  (target "demo")

Try the consent in your browser: open this link, sign in with any name, and
allow access. The gateway then holds an encrypted grant for dev-user:

  $link

More links: $admin connect --user <name> --target demo

Inbound auth is in development mode: no token needed; the user is the
X-Gateway-Dev-User header (default "dev-user").
Logs: $state_dir/gateway.log. Press Ctrl-C to stop.
MSG
wait "${pids[@]}"
