// Drives the gateway with the official TypeScript MCP SDK client (2025-11-25,
// URL elicitation declared): list tools, call one, meet the consent as error
// -32042, complete it in headless Chromium as the user, retry.
//
//   node sdk-client.mjs '{"url": "...", "user": "alice", "tool": "demo___whoami"}'
//
// Prints one JSON object with what happened.
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

const transport = new StreamableHTTPClientTransport(new URL(opts.url), {
  requestInit: { headers: { 'X-Gateway-Dev-User': opts.user } },
});
const client = new Client({ name: 'gateway-tests-ts', version: '1.0.0' }, {
  capabilities: { elicitation: { form: {}, url: {} } },
});
await client.connect(transport);
const report = { protocolVersion: transport.protocolVersion, elicitations: [], pages: [] };
report.tools = (await client.listTools()).tools.map((t) => t.name).sort();
let result;
for (let attempt = 0; attempt < 2 && !result; attempt += 1) {
  try {
    result = await client.callTool({ name: opts.tool, arguments: {} });
  } catch (err) {
    const elicitations = err?.elicitations ?? err?.data?.elicitations;
    if (!(err instanceof McpError) || err.code !== ErrorCode.UrlElicitationRequired || !elicitations) throw err;
    for (const e of elicitations) {
      report.elicitations.push(e.url);
      report.pages.push(consent(e.url).title);
    }
  }
}
report.isError = Boolean(result.isError);
report.text = result.content.map((c) => c.text ?? '').join('');
await client.close();
process.stdout.write(`${JSON.stringify(report)}\n`);
