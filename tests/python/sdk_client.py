"""Drives the gateway with the official Python MCP SDK client, as an agent
would: list tools, call one, meet the consent (a URL elicitation), complete it
in a headless browser as the user, and get the answer.

    python sdk_client.py --url URL --user alice --tool demo___whoami --mode auto|legacy

`--user` is both the gateway's development-mode user and the login name at
the authorization server. Prints one JSON object with what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import subprocess

from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError

BROWSER = pathlib.Path(__file__).resolve().parent.parent / "node" / "consent-browser.mjs"


def consent_in_browser(url: str, login: str) -> dict:
    out = subprocess.run(
        ["node", str(BROWSER), json.dumps({"url": url, "logins": [login], "action": "consent"})],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    args = parser.parse_args()

    report: dict = {"elicitations": [], "pages": []}

    async def on_elicitation(_context, params):
        # The 2026-07-28 flow: the SDK asks, the user consents, the SDK retries.
        if isinstance(params, types.ElicitRequestURLParams):
            report["elicitations"].append({"form": "input_required", "url": params.url})
            page = consent_in_browser(params.url, args.user)
            report["pages"].append(page.get("title"))
            return types.ElicitResult(action="accept")
        return types.ErrorData(code=-32600, message="only URL elicitations are supported here")

    http = create_mcp_http_client(headers={"X-Gateway-Dev-User": args.user})
    transport = streamable_http_client(args.url, http_client=http)
    async with Client(transport, mode=args.mode, elicitation_callback=on_elicitation) as client:
        report["protocol_version"] = getattr(client, "protocol_version", None) or str(
            getattr(getattr(client, "session", None), "protocol_version", "")
        )
        tools = await client.list_tools()
        report["tools"] = sorted(t.name for t in tools.tools)
        for _attempt in range(2):
            try:
                result = await client.call_tool(args.tool, {})
                break
            except MCPError as err:
                # The 2025-11-25 flow: error -32042 carries the URL; retry after consent.
                if err.error.code != -32042:  # URL elicitation required (2025-11-25)
                    raise
                for e in UrlElicitationRequiredError.from_error(err.error).elicitations:
                    report["elicitations"].append({"form": "error-32042", "url": e.url})
                    page = consent_in_browser(e.url, args.user)
                    report["pages"].append(page.get("title"))
        report["is_error"] = bool(result.is_error)
        report["text"] = "".join(getattr(c, "text", "") for c in result.content)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
