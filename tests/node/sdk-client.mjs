// Drives the gateway with the official TypeScript MCP SDK client (2025-11-25):
// list tools, call one, meet the consent, complete it in headless Chromium as
// the user, retry (at most 2 calls).
//
//   node sdk-client.mjs '{"url": "...", "user": "alice", "tool": "demo___whoami", "capabilities": "url"}'
//
// `capabilities` is what the client declares:
//   "url"  (default) {elicitation: {form: {}, url: {}}}: the consent comes as error -32042;
//   "form" {elicitation: {form: {}}} and "none" {}: no URL elicitation, so the
//          consent comes as a tool result with isError and a `/connect/` link in its text.
//
// Prints one JSON object: {protocolVersion, capabilities, tools, elicitations
// (the consent URLs), forms ("error-32042" or "text-link", one per URL),
// pages (the titles of the pages the browser ended on), isError, text}.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';

const opts = JSON.parse(process.argv[2]);
const here = dirname(fileURLToPath(import.meta.url));
const consent = (url) => JSON.parse(execFileSync('node', [join(here, 'consent-browser.mjs'),
  JSON.stringify({ url, logins: [opts.user], action: 'consent' })]).toString());

const declared = {
  url: { elicitation: { form: {}, url: {} } },
  form: { elicitation: { form: {} } },
  none: {},
};
const capabilities = opts.capabilities ?? 'url';
if (!(capabilities in declared)) throw new Error(`capabilities must be one of ${Object.keys(declared)}: ${capabilities}`);

// The consent link in a tool result's text (an http(s) URL with a /connect/
// path), without trailing punctuation.
const connectLink = (text) => (text.match(/https?:\/\/[^\s<>"'`]+/g) ?? [])
  .map((url) => url.replace(/[.,;:!?)\]}]+$/, ''))
  .find((url) => url.includes('/connect/'));

const transport = new StreamableHTTPClientTransport(new URL(opts.url), {
  requestInit: { headers: { 'X-Gateway-Dev-User': opts.user } },
});
const client = new Client({ name: 'gateway-tests-ts', version: '1.0.0' }, {
  capabilities: declared[capabilities],
});
await client.connect(transport);
const report = { protocolVersion: transport.protocolVersion, capabilities, elicitations: [], forms: [], pages: [] };
const consentTo = (form, url) => {
  report.elicitations.push(url);
  report.forms.push(form);
  report.pages.push(consent(url).title);
};
report.tools = (await client.listTools()).tools.map((t) => t.name).sort();
let result;
for (let attempt = 0; attempt < 2; attempt += 1) {
  try {
    result = await client.callTool({ name: opts.tool, arguments: {} });
  } catch (err) {
    const elicitations = err?.elicitations ?? err?.data?.elicitations;
    if (!(err instanceof McpError) || err.code !== ErrorCode.UrlElicitationRequired || !elicitations) throw err;
    for (const e of elicitations) consentTo('error-32042', e.url);
    continue;
  }
  // No URL elicitation declared: the link comes as text; retry after consent.
  const link = result.isError ? connectLink(result.content.map((c) => c.text ?? '').join('')) : undefined;
  if (!link) break;
  consentTo('text-link', link);
}
report.isError = Boolean(result?.isError);
report.text = (result?.content ?? []).map((c) => c.text ?? '').join('');
await client.close();
process.stdout.write(`${JSON.stringify(report)}\n`);
