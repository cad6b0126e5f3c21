// The gateway as the OAuth client of an MCP conformance client scenario.
//
// The suite runs `node client-driver.mjs <mcp-url>` with the scenario's MCP
// server URL. As an operator and an agent would, this:
//   1. registers that server as a target with `gateway-admin target add`
//      (discovery, client registration or the scenario's pre-registered
//      client),
//   2. asks the gateway's /mcp for the target's tools as a user of its own,
//   3. follows each consent link it is handed with plain HTTP (the suite's
//      authorization servers approve without a login page; the gateway's
//      browser-binding cookie is kept like a browser keeps it),
//   4. calls the upstream's first tool through the gateway, retrying after
//      each consent, at most MAX_ROUNDS times,
// then removes the target. Exit status 0 when a tool call returned a result.
//
// Environment: GATEWAY_ADMIN (the gateway-admin binary), GATEWAY_URL (the
// gateway's base URL, in INBOUND_AUTH_MODE=dev), GATEWAY_PUBLIC_URL (its
// public URL if links name another, rewritten to GATEWAY_URL), the AWS variables
// gateway-admin needs (TABLE_NAME, KEYSET_SECRET_ARN, AWS_ENDPOINT_URL, ...),
// and the suite's MCP_CONFORMANCE_SCENARIO / MCP_CONFORMANCE_CONTEXT.

import { execFileSync } from "node:child_process";

const MAX_ROUNDS = 4;
const mcpUrl = process.argv.at(-1);
const admin = must("GATEWAY_ADMIN");
const gateway = must("GATEWAY_URL").replace(/\/$/, "");
// The gateway's public URL, when it differs from where this reaches it.
const publicUrl = (process.env.GATEWAY_PUBLIC_URL || gateway).replace(/\/$/, "");
const local = (url) => (url.startsWith(publicUrl) ? gateway + url.slice(publicUrl.length) : url);
const scenario = process.env.MCP_CONFORMANCE_SCENARIO ?? "";
const context = JSON.parse(process.env.MCP_CONFORMANCE_CONTEXT || "{}");
// One target and one user per scenario run: ports are reused between runs,
// so the name carries a random part too.
const name = `c${new URL(mcpUrl).port || "80"}-${Math.random().toString(36).slice(2, 8)}`;
const user = `conformance-${name}`;

function must(variable) {
  const value = process.env[variable];
  if (!value) {
    console.error(`client-driver: ${variable} is not set`);
    process.exit(2);
  }
  return value;
}

function log(...parts) {
  console.error(`[client-driver ${scenario}]`, ...parts);
}

function gatewayAdmin(args, input) {
  log("gateway-admin", args.join(" "));
  return execFileSync(admin, args, { encoding: "utf8", input, stdio: ["pipe", "pipe", "inherit"] });
}

function register() {
  // An explicit prefix: a lone target's tools are otherwise listed unprefixed.
  const args = ["target", "add", name, "--mcp-url", mcpUrl, "--allow-insecure-local", "--tool-prefix", `${name}___`];
  if (context.client_id) {
    args.push("--client-id", context.client_id);
    if (context.client_secret || context.private_key_pem) args.push("--client-secret-stdin");
    // A private key instead of a secret: private_key_jwt (RFC 7523).
    if (context.private_key_pem) args.push("--auth-method", "private_key_jwt");
  }
  // Machine-to-machine scenarios: one token for the target, no consent.
  if (scenario.startsWith("auth/client-credentials")) args.push("--client-credentials");
  // Workload identity: the workload's JWT as a bearer assertion.
  if (context.valid_jwt) args.push("--jwt-bearer", "--client-secret-stdin");
  // Enterprise-managed authorization: the user's ID token (sent as the
  // caller's bearer token) exchanged at the identity provider for an ID-JAG.
  if (context.idp_token_endpoint) {
    args.push("--auth", "enterprise_managed", "--idp-token-endpoint", context.idp_token_endpoint,
      "--idp-client-id", context.idp_client_id);
  }
  log(gatewayAdmin(args, context.client_secret ?? context.private_key_pem ?? context.valid_jwt ?? "").trim());
}

// --- MCP through the gateway (2025-11-25, declaring URL elicitation) -------

let session;
let nextId = 1;

async function rpc(method, params) {
  const id = nextId++;
  const headers = {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "x-gateway-dev-user": user,
  };
  // The caller's own bearer token, which the gateway exchanges for
  // token-exchange targets (the development inbound mode does not check it).
  if (context.idp_id_token) headers.authorization = `Bearer ${context.idp_id_token}`;
  if (session) {
    headers["mcp-session-id"] = session;
    headers["mcp-protocol-version"] = "2025-11-25";
  }
  const res = await fetch(`${gateway}/mcp`, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", id, method, params }),
  });
  session = res.headers.get("mcp-session-id") ?? session;
  const text = await res.text();
  const messages = res.headers.get("content-type")?.startsWith("text/event-stream")
    ? text.split("\n").filter((l) => l.startsWith("data:")).map((l) => JSON.parse(l.slice(5)))
    : [JSON.parse(text)];
  const reply = messages.find((m) => m.id === id);
  if (!reply) throw new Error(`${method}: HTTP ${res.status} without a reply: ${text.slice(0, 500)}`);
  return reply;
}

async function initialize() {
  const reply = await rpc("initialize", {
    protocolVersion: "2025-11-25",
    capabilities: { elicitation: { url: {} } },
    clientInfo: { name: "conformance-client-driver", version: "1" },
  });
  if (reply.error) throw new Error(`initialize: ${JSON.stringify(reply.error)}`);
  await fetch(`${gateway}/mcp`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "x-gateway-dev-user": user,
      "mcp-session-id": session,
      "mcp-protocol-version": "2025-11-25",
    },
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
}

// The consent link in a reply, if the reply asks for one.
function consentLink(reply) {
  const elicitations = reply.error?.data?.elicitations ?? [];
  return elicitations.find((e) => e.mode === "url")?.url;
}

// --- the consent link, as a browser without a person would follow it ----------

async function followLink(link) {
  const jar = new Map(); // origin -> Map(cookie name -> value)
  let url = local(link);
  for (let hop = 0; hop < 10; hop++) {
    const origin = new URL(url).origin;
    const cookies = jar.get(origin);
    const headers = cookies ? { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join("; ") } : {};
    const res = await fetch(url, { redirect: "manual", headers });
    for (const set of res.headers.getSetCookie()) {
      const [pair] = set.split(";");
      const at = pair.indexOf("=");
      if (!jar.has(origin)) jar.set(origin, new Map());
      jar.get(origin).set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location) {
      log(`consent hop ${hop}: ${res.status} -> ${location}`);
      url = local(new URL(location, url).href);
      continue;
    }
    const body = await res.text();
    const title = body.match(/<h1 id="title">([^<]*)<\/h1>/)?.[1] ?? body.slice(0, 200);
    log(`consent ended at ${url}: ${res.status} ${title}`);
    return res.ok;
  }
  log("consent: too many redirects");
  return false;
}

// --- the run ---------------------------------------------------------------

async function main() {
  register();
  await initialize();
  const prefix = `${name}___`;
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const listed = await rpc("tools/list", {});
    if (listed.error) throw new Error(`tools/list: ${JSON.stringify(listed.error)}`);
    const mine = listed.result.tools.filter((t) => t.name.startsWith(prefix));
    const tool = mine.find((t) => t.name !== `${prefix}connect`) ?? mine[0];
    if (!tool) {
      // Connected, and the upstream has no tools: listing them was the call.
      log(`round ${round}: connected; the upstream lists no tools`);
      return 0;
    }
    log(`round ${round}: calling ${tool.name}`);
    const reply = await rpc("tools/call", { name: tool.name, arguments: {} });
    const link = consentLink(reply);
    if (link) {
      log(`round ${round}: consent needed`);
      await followLink(link);
      continue;
    }
    if (reply.error) throw new Error(`tools/call: ${JSON.stringify(reply.error)}`);
    if (tool.name === `${prefix}connect`) continue; // connected: list the real tools
    log(`round ${round}: result ${JSON.stringify(reply.result).slice(0, 300)}`);
    return reply.result.isError ? 1 : 0;
  }
  log(`gave up after ${MAX_ROUNDS} rounds`);
  return 1;
}

let status = 1;
try {
  status = await main();
} catch (e) {
  log(e instanceof Error ? e.message : String(e));
} finally {
  try {
    gatewayAdmin(["target", "remove", name]);
  } catch {
    // Never registered: nothing to remove.
  }
}
process.exit(status);
