"""The MCP conformance suite's server fixtures (tools, resources, prompts,
completion), written with the official Python SDK (`mcp` 2.x), for running
the suite against the gateway placed in front of this server.

    python conformance_fixtures.py --port 8300
"""

from __future__ import annotations

import argparse
import asyncio

from mcp import types
from mcp.shared.exceptions import MCPError
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import UserMessage

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

server = MCPServer(name="conformance-fixtures")


@server.tool(description="Returns a simple text response")
def test_simple_text() -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text="This is a simple text response for testing.")]


@server.tool(description="Returns an image")
def test_image_content() -> list[types.ContentBlock]:
    return [types.ImageContent(type="image", data=PNG, mimeType="image/png")]


@server.tool(description="Returns audio")
def test_audio_content() -> list[types.ContentBlock]:
    return [types.AudioContent(type="audio", data=WAV, mimeType="audio/wav")]


@server.tool(description="Returns an embedded resource")
def test_embedded_resource() -> list[types.ContentBlock]:
    return [
        types.EmbeddedResource(
            type="resource",
            resource=types.TextResourceContents(
                uri="test://embedded-resource", mimeType="text/plain", text="This is an embedded resource content."
            ),
        )
    ]


@server.tool(description="Returns text, an image and a resource")
def test_multiple_content_types() -> list[types.ContentBlock]:
    return [
        types.TextContent(type="text", text="Multiple content types test:"),
        types.ImageContent(type="image", data=PNG, mimeType="image/png"),
        types.EmbeddedResource(
            type="resource",
            resource=types.TextResourceContents(
                uri="test://mixed-content-resource",
                mimeType="application/json",
                text='{"test":"data","value":123}',
            ),
        ),
    ]


@server.tool(description="Returns an error result")
def test_error_handling() -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text="This tool intentionally returns an error for testing")],
        isError=True,
    )


@server.tool(description="Reports progress")
async def test_tool_with_progress(ctx: Context) -> str:
    for step in (0, 50, 100):
        await ctx.report_progress(step, 100)
        await asyncio.sleep(0.05)
    return "Progress test completed"


@server.tool(description="Sends log messages")
async def test_tool_with_logging(ctx: Context) -> str:
    for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await ctx.info(message)
        await asyncio.sleep(0.05)
    return "Logging test completed"


@server.tool(description="Asks the client's model (sampling)")
async def test_sampling(prompt: str, ctx: Context) -> str:
    result = await ctx.session.create_message(
        messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
        max_tokens=100,
        related_request_id=ctx.request_id,
    )
    return f"LLM response: {getattr(result.content, 'text', '')}"


@server.tool(description="Asks the user (form elicitation)")
async def test_elicitation(message: str, ctx: Context) -> str:
    result = await ctx.session.elicit_form(
        message=message,
        requested_schema={
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        },
        related_request_id=ctx.request_id,
    )
    return f"User response: action={result.action}, content={result.content}"


@server.tool(description="Asks the user with defaults in the form (SEP-1034)")
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    result = await ctx.session.elicit_form(
        message="Please review and update the form fields with defaults",
        requested_schema={
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verification status", "default": True},
            },
            "required": [],
        },
        related_request_id=ctx.request_id,
    )
    return f"Elicitation completed: action={result.action}, content={result.content}"


@server.tool(description="Asks the user with every kind of enum (SEP-1330)")
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    options = ["option1", "option2", "option3"]
    titled = [
        {"const": "value1", "title": "First Option"},
        {"const": "value2", "title": "Second Option"},
        {"const": "value3", "title": "Third Option"},
    ]
    result = await ctx.session.elicit_form(
        message="Please select options from the enum fields",
        requested_schema={
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": options},
                "titledSingle": {"type": "string", "oneOf": titled},
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {"type": "array", "items": {"type": "string", "enum": options}},
                "titledMulti": {"type": "array", "items": {"anyOf": titled}},
            },
            "required": [],
        },
        related_request_id=ctx.request_id,
    )
    return f"Elicitation completed: action={result.action}, content={result.content}"


@server.resource("test://static-text", name="static-text", description="A static text resource", mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@server.resource("test://static-binary", name="static-binary", description="A static binary resource", mime_type="image/png")
def static_binary() -> bytes:
    import base64

    return base64.b64decode(PNG)


@server.resource("test://template/{id}/data", name="template", description="A resource template", mime_type="application/json")
def template(id: str) -> str:
    return '{"id":"%s","templateTest":true,"data":"Data for ID: %s"}' % (id, id)


@server.resource("test://watched-resource", name="watched-resource", description="A watched resource", mime_type="text/plain")
def watched() -> str:
    return "Watched resource content"


@server.prompt(description="A simple prompt")
def test_simple_prompt() -> str:
    return "This is a simple prompt for testing."


@server.prompt(description="A prompt with arguments")
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@server.prompt(description="A prompt with an embedded resource")
def test_prompt_with_embedded_resource(resourceUri: str) -> list:
    return [
        UserMessage(
            content=types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(
                    uri=resourceUri, mimeType="text/plain", text="Embedded resource content for testing."
                ),
            ),
        ),
        UserMessage(content=types.TextContent(type="text", text="Please process the embedded resource above.")),
    ]


@server.prompt(description="A prompt with an image")
def test_prompt_with_image() -> list:
    return [
        UserMessage(content=types.ImageContent(type="image", data=PNG, mimeType="image/png")),
        UserMessage(content=types.TextContent(type="text", text="Please analyze the image above.")),
    ]


@server.completion()
async def complete(ref, argument, context):
    return types.Completion(values=[], total=0, hasMore=False)


# The requests above name the call they belong to (`related_request_id`):
# a Streamable HTTP server sends them on the call's own stream, where a
# client (or a gateway) reading the call's answer sees them. Without it the
# SDK sends them on the session's standalone GET stream instead.


# --- 2026-07-28 multi round-trip requests (SEP-2322): the tools the suite's
# input-required-result scenarios call. Each returns `input_required` until
# the retry carries the answers; the SDK seals `requestState` against
# tampering and binds it to the call.


def _elicit(message: str, properties: dict, required: list[str] | None = None) -> types.ElicitRequest:
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str, max_tokens: int) -> types.CreateMessageRequest:
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))],
            max_tokens=max_tokens,
        )
    )


def _roots() -> types.ListRootsRequest:
    return types.ListRootsRequest(params=types.RequestParams())


def _accepted(ctx: Context, key: str) -> dict | None:
    """The content of an accepted elicitation answer under `key`."""
    answer = (ctx.input_responses or {}).get(key)
    content = getattr(answer, "content", None)
    if getattr(answer, "action", None) == "accept" and isinstance(content, dict):
        return content
    return None


def _text(text: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=text)]


@server.tool(description="Asks the user's name, then greets them (input_required)")
def test_input_required_result_elicitation(ctx: Context) -> list[types.ContentBlock] | types.InputRequiredResult:
    answer = _accepted(ctx, "user_name")
    if answer is None or not isinstance(answer.get("name"), str):
        return types.InputRequiredResult(
            input_requests={"user_name": _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])}
        )
    return _text(f"Hello, {answer['name']}!")


@server.tool(description="Asks the client's model a question (input_required)")
def test_input_required_result_sampling(ctx: Context) -> list[types.ContentBlock] | types.InputRequiredResult:
    answer = (ctx.input_responses or {}).get("capital_question")
    if answer is None:
        return types.InputRequiredResult(
            input_requests={"capital_question": _sample("What is the capital of France?", 100)}
        )
    return _text(f"The model said: {getattr(answer.content, 'text', '')}")


@server.tool(description="Asks the client for its roots (input_required)")
def test_input_required_result_list_roots(ctx: Context) -> list[types.ContentBlock] | types.InputRequiredResult:
    answer = (ctx.input_responses or {}).get("client_roots")
    if answer is None:
        return types.InputRequiredResult(input_requests={"client_roots": _roots()})
    return _text("Roots: " + ", ".join(str(r.uri) for r in getattr(answer, "roots", [])))


@server.tool(description="Asks for a confirmation and keeps state between rounds (input_required)")
def test_input_required_result_request_state(ctx: Context) -> list[types.ContentBlock] | types.InputRequiredResult:
    answer = _accepted(ctx, "confirm")
    if answer is None or ctx.request_state != "awaiting-confirmation":
        return types.InputRequiredResult(
            input_requests={"confirm": _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
            request_state="awaiting-confirmation",
        )
    return _text(f"state-ok: confirmed={answer.get('ok')}")


@server.tool(description="Asks for three inputs at once (input_required)")
def test_input_required_result_multiple_inputs(ctx: Context) -> list[types.ContentBlock] | types.InputRequiredResult:
    answers = ctx.input_responses or {}
    if not all(k in answers for k in ("user_name", "greeting", "client_roots")):
        return types.InputRequiredResult(
            input_requests={
                "user_name": _elicit("What is your name?", {"name": {"type": "string"}}, ["name"]),
                "greeting": _sample("Generate a greeting", 50),
                "client_roots": _roots(),
            },
            request_state="multiple-inputs",
        )
    name = (_accepted(ctx, "user_name") or {}).get("name", "")
    return _text(f"Name {name}; greeting {getattr(answers['greeting'].content, 'text', '')}")


@server.tool(description="Asks two questions in two rounds (input_required)")
def test_input_required_result_multi_round(ctx: Context) -> list[types.ContentBlock] | types.InputRequiredResult:
    step2 = _accepted(ctx, "step2")
    if ctx.request_state and ctx.request_state.startswith("step2:") and step2 is not None:
        return _text(f"{ctx.request_state[6:]} likes {step2.get('color')}")
    step1 = _accepted(ctx, "step1")
    if ctx.request_state == "step1" and step1 is not None:
        return types.InputRequiredResult(
            input_requests={
                "step2": _elicit("Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"])
            },
            request_state=f"step2:{step1.get('name', '')}",
        )
    return types.InputRequiredResult(
        input_requests={"step1": _elicit("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])},
        request_state="step1",
    )


@server.tool(description="Asks for a confirmation whose state must come back unchanged (input_required)")
def test_input_required_result_tampered_state(ctx: Context) -> list[types.ContentBlock] | types.InputRequiredResult:
    if ctx.request_state == "confirm-pending" and _accepted(ctx, "confirm") is not None:
        return _text("confirmed")
    return types.InputRequiredResult(
        input_requests={"confirm": _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
        request_state="confirm-pending",
    )


@server.tool(description="Asks only for what the client declared it can give (input_required)")
def test_input_required_result_capabilities(ctx: Context) -> list[types.ContentBlock] | types.InputRequiredResult:
    if ctx.input_responses:
        return _text("answered")
    caps = ctx.client_capabilities
    if caps is not None and caps.elicitation is not None:
        request = _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])
    elif caps is not None and caps.sampling is not None:
        request = _sample("What is your name?", 20)
    elif caps is not None and caps.roots is not None:
        request = _roots()
    else:
        return _text("the client declared nothing to ask with")
    return types.InputRequiredResult(input_requests={"ask": request})


@server.prompt(description="A prompt that asks for context first (input_required)")
def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | types.InputRequiredResult:
    answer = _accepted(ctx, "user_context")
    if answer is None:
        return types.InputRequiredResult(
            input_requests={
                "user_context": _elicit(
                    "What context should the prompt use?", {"context": {"type": "string"}}, ["context"]
                )
            }
        )
    return [UserMessage(f"Use this context: {answer.get('context', '')}")]


# --- Tools the suite looks for by name that the SDK's decorators cannot
# declare as the suite wants them.

JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


@server.tool(description="A tool whose input schema uses JSON Schema 2020-12 keywords")
def json_schema_2020_12_tool(
    name: str | None = None,
    address: dict | None = None,
    contactMethod: str | None = None,  # noqa: N803 (the schema's name)
    phone: str | None = None,
    email: str | None = None,
) -> str:
    return f"Received {name or 'no name'}"


# The schema as written, not as derived from the signature.
server._tool_manager.get_tool("json_schema_2020_12_tool").parameters = JSON_SCHEMA_2020_12


@server.tool(description="Echoes a value that also travels as the Mcp-Param-Region header (2026-07-28)")
def test_header_param(region: str) -> str:
    return f"region {region}"


server._tool_manager.get_tool("test_header_param").parameters = {
    "type": "object",
    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
    "required": ["region"],
}


@server.tool(description="Needs the client's sampling capability (2026-07-28: error -32021 without it)")
def test_missing_capability(ctx: Context) -> str:
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(
            code=-32021,
            message="This tool needs the client's sampling capability",
            data={"requiredCapabilities": {"sampling": {}}},
        )
    return "the client can sample"


# --- Resource subscriptions. 2025 sessions subscribe with
# `resources/subscribe` and hear `notifications/resources/updated` on their
# standalone GET stream; 2026-07-28 clients listen with
# `subscriptions/listen` (served by MCPServer). `test_update_watched_resource`
# reports an update of a resource to both.

_subscribed: dict[object, tuple[object, set[str]]] = {}


def _session_key(ctx) -> object:
    # The SDK hands each request its own ServerSession object: the
    # session's id names the session.
    headers = getattr(ctx.request, "headers", None)
    return (headers.get("mcp-session-id") if headers is not None else None) or id(ctx.session)


async def _subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    _subscribed.setdefault(_session_key(ctx), (ctx.session, set()))[1].add(str(params.uri))
    return types.EmptyResult()


async def _unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    entry = _subscribed.get(_session_key(ctx))
    if entry is not None:
        entry[1].discard(str(params.uri))
    return types.EmptyResult()


server._lowlevel_server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, _subscribe)
server._lowlevel_server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, _unsubscribe)


@server.tool(description="Reports an update of a resource to its subscribers")
async def test_update_watched_resource(ctx: Context, uri: str = "test://watched-resource") -> str:
    told = 0
    for session, uris in list(_subscribed.values()):
        if uri in uris:
            try:
                await session.send_resource_updated(uri)
                told += 1
            except Exception:  # a session gone away
                pass
    await ctx.notify_resource_updated(uri)
    return f"told {told} subscribed sessions"


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = server.streamable_http_app(host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
