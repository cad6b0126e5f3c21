"""Drives the gateway with a Strands Agents `MCPClient`, the way a Strands
agent's tools would (no model needed): list tools, call one, meet the consent,
complete it in a headless browser as the user, retry (at most 2 calls).

    python strands_client.py --url URL --user alice --tool demo___whoami

`--user` is both the gateway's development-mode user (`X-Gateway-Dev-User`)
and the login name at the authorization server. The MCPClient is given no
elicitation callback, as in most agents, so it declares no elicitation
capability: the gateway hands the consent link over as a tool result with
isError whose text holds a `/connect/` link ("text-link"). A -32042 error,
which Strands turns into an error result quoting the elicitation data, is
handled too ("error-32042").

Prints one JSON object (always, exit 0):
  {"tools": [...], "elicitations": [{"form", "url"}], "pages": [...],
   "status": "success"|"error", "is_error": bool, "text": "...", "error"?: "..."}
`status` is Strands' ToolResult status; `is_error` is true when it is
"error". `error` is set when the call failed in the client rather than in
the tool (Strands reports that as "Tool execution failed: ...", for example
"Elicitation not supported"), or when anything else raised.
"""

from __future__ import annotations

import argparse
import json
from contextlib import asynccontextmanager

from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from strands.tools.mcp import MCPClient

from sdk_client import connect_link, consent_in_browser, describe

CLIENT_FAILURE = "Tool execution failed: "  # Strands' text for an exception in the call
ELICITATION_REQUIRED = "MCP Elicitation required"  # Strands' text for error -32042


def run(args: argparse.Namespace, report: dict) -> None:
    @asynccontextmanager
    async def transport():
        # mcp 2.x: headers travel on the HTTP client, which the caller closes.
        async with create_mcp_http_client(headers={"X-Gateway-Dev-User": args.user}) as http:
            async with streamable_http_client(args.url, http_client=http) as streams:
                yield streams

    with MCPClient(transport) as gateway:
        report["tools"] = sorted(t.tool_name for t in gateway.list_tools_sync())
        for attempt in range(2):
            result = gateway.call_tool_sync(f"call-{attempt + 1}", args.tool, {})
            text = "".join(c.get("text", "") for c in result.get("content", []))
            report["status"] = result.get("status")
            report["is_error"] = result.get("status") == "error"
            report["text"] = text
            if not report["is_error"]:
                break
            if text.startswith(CLIENT_FAILURE):
                report["error"] = text.removeprefix(CLIENT_FAILURE)
                break
            link = connect_link(text)
            if link is None:
                break
            form = "error-32042" if text.startswith(ELICITATION_REQUIRED) else "text-link"
            report["elicitations"].append({"form": form, "url": link})
            page = consent_in_browser(link, args.user)
            report["pages"].append(page.get("title"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--tool", required=True)
    args = parser.parse_args()

    report: dict = {"tools": [], "elicitations": [], "pages": []}
    try:
        run(args, report)
    except Exception as err:  # noqa: BLE001 - reported, so the test shows what went wrong
        report["error"] = describe(err)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
