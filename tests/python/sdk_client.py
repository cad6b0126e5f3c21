"""Drives the gateway with the official Python MCP SDK client, as an agent
would: list tools, call one, meet the consent, complete it in a headless
browser as the user, and get the answer.

    python sdk_client.py --url URL --user alice --tool demo___whoami \
        [--mode auto|legacy] [--elicitation callback|none]

`--user` is both the gateway's development-mode user and the login name at
the authorization server. `--mode auto` negotiates 2026-07-28
(server/discover), `--mode legacy` 2025-11-25 (initialize).
`--elicitation callback` (default) gives the SDK an elicitation callback, so
the client declares elicitation (form and url); `--elicitation none` gives it
none, so it declares no elicitation capability at all.

The consent can arrive three ways, and each is completed in the browser and
the call retried (at most 2 calls):
  - "input_required": 2026-07-28, the SDK hands the URL elicitation to the
    callback and retries by itself;
  - "error-32042": 2025-11-25, error -32042 carries the URL elicitation;
  - "text-link": a client without URL elicitation gets a tool result with
    isError and a `/connect/` link in its text.

Prints one JSON object (always, exit 0):
  {"protocol_version", "tools": [...], "elicitations": [{"form", "url"}],
   "pages": [...], "is_error": bool, "text": "...", "error"?: "..."}
`error` is set when the SDK raised instead (for example "Elicitation not
supported"); `is_error` and `text` are then those of the last result, if any.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import re
import subprocess

from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError

BROWSER = pathlib.Path(__file__).resolve().parent.parent / "node" / "consent-browser.mjs"
# An http(s) URL; connect_link keeps the first one with a /connect/ path.
URL_RE = re.compile(r"https?://[^\s<>\"'`]+")


def connect_link(text: str) -> str | None:
    """The consent link in a tool result's text, without trailing punctuation."""
    for match in URL_RE.finditer(text or ""):
        url = match.group(0).rstrip(".,;:!?)]}")
        if "/connect/" in url:
            return url
    return None


def consent_in_browser(url: str, login: str) -> dict:
    out = subprocess.run(
        ["node", str(BROWSER), json.dumps({"url": url, "logins": [login], "action": "consent"})],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def describe(err: BaseException) -> str:
    """The innermost message of an error (task groups wrap the real one)."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return str(err) or type(err).__name__


async def run(args: argparse.Namespace, report: dict) -> None:
    async def on_elicitation(_context, params):
        # The 2026-07-28 flow: the SDK asks, the user consents, the SDK retries.
        if isinstance(params, types.ElicitRequestURLParams):
            report["elicitations"].append({"form": "input_required", "url": params.url})
            page = consent_in_browser(params.url, args.user)
            report["pages"].append(page.get("title"))
            return types.ElicitResult(action="accept")
        return types.ErrorData(code=-32600, message="only URL elicitations are supported here")

    def consent(form: str, url: str) -> None:
        report["elicitations"].append({"form": form, "url": url})
        page = consent_in_browser(url, args.user)
        report["pages"].append(page.get("title"))

    http = create_mcp_http_client(headers={"X-Gateway-Dev-User": args.user})
    transport = streamable_http_client(args.url, http_client=http)
    # Without a callback the SDK declares no elicitation capability.
    callback = {"elicitation_callback": on_elicitation} if args.elicitation == "callback" else {}
    async with Client(transport, mode=args.mode, **callback) as client:
        report["protocol_version"] = getattr(client, "protocol_version", None) or str(
            getattr(getattr(client, "session", None), "protocol_version", "")
        )
        tools = await client.list_tools()
        report["tools"] = sorted(t.name for t in tools.tools)
        for _attempt in range(2):
            try:
                result = await client.call_tool(args.tool, {})
            except MCPError as err:
                # The 2025-11-25 flow: error -32042 carries the URL; retry after consent.
                if err.error.code != -32042:  # URL elicitation required (2025-11-25)
                    raise
                for e in UrlElicitationRequiredError.from_error(err.error).elicitations:
                    consent("error-32042", e.url)
                continue
            report["is_error"] = bool(result.is_error)
            report["text"] = "".join(getattr(c, "text", "") for c in result.content)
            # No URL elicitation declared: the link comes as text; retry after consent.
            link = connect_link(report["text"]) if result.is_error else None
            if link is None:
                break
            consent("text-link", link)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    parser.add_argument("--elicitation", default="callback", choices=["callback", "none"])
    args = parser.parse_args()

    report: dict = {"elicitations": [], "pages": []}
    try:
        await run(args, report)
    except Exception as err:  # noqa: BLE001 - reported, so the test shows what went wrong
        report["error"] = describe(err)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
