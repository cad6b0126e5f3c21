"""Runs the README's Strands snippet (the fenced python block after
`<!-- snippet: strands -->`) against a gateway, without a model.

    python readme_snippet.py --url URL --tool demo___whoami [--readme README.md]

Before running the block it
  - replaces the snippet's placeholder URL literal "https://<api>/mcp" with
    `--url` (it must occur exactly once);
  - defines `token` (a made-up value: development mode ignores
    `Authorization`, so the caller is `dev-user`);
  - swaps `strands.Agent` for a stand-in whose call, instead of asking a
    model, calls `--tool` with no arguments through the snippet's MCPClient
    (`gateway.call_tool_sync(...)`), and records what it got.

Prints one JSON object (exit 0; only a README without the block is exit 1):
  {"tools": [...], "status": "success"|"error", "is_error": bool,
   "text": "...", "link": "<the /connect/ link in the text>"|null,
   "prompt": "...", "error"?: "..."}
`error` is set when the call failed in the client rather than in the tool
(Strands' "Tool execution failed: ...", for example "Elicitation not
supported"), when the snippet raised, or when its agent was never called.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

import strands

from sdk_client import connect_link, describe

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
MARKER = "<!-- snippet: strands -->"
PLACEHOLDER = '"https://<api>/mcp"'
CLIENT_FAILURE = "Tool execution failed: "  # Strands' text for an exception in the call


def snippet(readme: pathlib.Path) -> str:
    """The fenced python block right after the marker line."""
    text = readme.read_text(encoding="utf-8")
    found = re.search(re.escape(MARKER) + r"\s*\n```python\n(.*?)\n```", text, re.S)
    if found is None:
        raise SystemExit(f"{readme}: no ```python block right after {MARKER}")
    return found.group(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--readme", type=pathlib.Path, default=ROOT / "README.md")
    args = parser.parse_args()

    code = snippet(args.readme)
    if code.count(PLACEHOLDER) != 1:
        raise SystemExit(f"the snippet must contain {PLACEHOLDER} exactly once")
    code = code.replace(PLACEHOLDER, json.dumps(args.url))

    report: dict = {}
    namespace: dict = {"__name__": "readme_snippet", "token": "readme-snippet-token"}

    class Agent:
        """Stands in for strands.Agent: one tool call instead of a model."""

        def __init__(self, tools=None, **_kwargs):
            report["tools"] = sorted(t.tool_name for t in tools or [])

        def __call__(self, prompt, **_kwargs):
            report["prompt"] = prompt
            result = namespace["gateway"].call_tool_sync("t1", args.tool, {})
            text = "".join(c.get("text", "") for c in result.get("content", []))
            report["status"] = result.get("status")
            report["is_error"] = result.get("status") == "error"
            report["text"] = text
            report["link"] = connect_link(text)
            if text.startswith(CLIENT_FAILURE):
                report["error"] = text.removeprefix(CLIENT_FAILURE)
            return result

    strands.Agent = Agent  # what the snippet's `from strands import Agent` picks up
    try:
        exec(compile(code, f"{args.readme}:{MARKER}", "exec"), namespace)
        if "status" not in report:
            report["error"] = "the snippet never called its agent"
    except Exception as err:  # noqa: BLE001 - reported, so the test shows what went wrong
        report["error"] = describe(err)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
