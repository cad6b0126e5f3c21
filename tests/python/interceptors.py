"""Interceptors in the shape of Amazon Bedrock AgentCore Gateway's documented
examples (interceptorInputVersion "1.0" in, interceptorOutputVersion "1.0"
out), and a local stand-in for the Lambda Invoke API that runs them.

Handlers (by function name):
- pass_through: the request as it came;
- gate (REQUEST): refuses tools/call of test_image_content with a JSON-RPC
  error (HTTP 403); renames calls of renamed_simple_text to test_simple_text;
  when the request's headers are passed, refuses requests without X-Team;
- shape (RESPONSE): drops tools whose name holds "image" from tools/list;
  redacts the word "simple" in tool results;
- slow: answers after 2 s; malformed: an answer outside the contract;
- raise: the function fails (the Invoke API's X-Amz-Function-Error).

The stand-in answers POST /2015-03-31/functions/<ARN>/invocations when the
request carries a valid SigV4 signature for service lambda (botocore's
signer, test credentials), and POST /url/<name> without one (an interceptor
reached by URL). GET /stats gives the invocations seen and the last payload.

    python interceptors.py --port P
"""

import argparse
import json
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sigv4_upstream import valid_signature


def pass_through(event, context):
    return {"interceptorOutputVersion": "1.0",
            "mcp": {"transformedGatewayRequest": {"body": event["mcp"]["gatewayRequest"]["body"]}}}


def gate(event, context):
    request = event["mcp"]["gatewayRequest"]
    body = request["body"]
    headers = {k.lower(): v for k, v in (request.get("headers") or {}).items()}
    if "headers" in request and "x-team" not in headers:
        return deny(body, 401, "an X-Team header is required")
    if body.get("method") == "tools/call":
        name = body.get("params", {}).get("name")
        if name == "test_image_content":
            return deny(body, 403, "image tools are blocked by the interceptor")
        if name == "renamed_simple_text":
            body = dict(body, params=dict(body["params"], name="test_simple_text"))
    return {"interceptorOutputVersion": "1.0", "mcp": {"transformedGatewayRequest": {"body": body}}}


def deny(body, status, message):
    return {"interceptorOutputVersion": "1.0", "mcp": {"transformedGatewayResponse": {
        "statusCode": status,
        "body": {"jsonrpc": "2.0", "id": body.get("id"), "error": {"code": -32003, "message": message}}}}}


def shape(event, context):
    response = event["mcp"]["gatewayResponse"]
    body = response["body"]
    result = body.get("result")
    if isinstance(result, dict) and isinstance(result.get("tools"), list):
        result["tools"] = [t for t in result["tools"] if "image" not in t.get("name", "")]
    if isinstance(result, dict) and isinstance(result.get("content"), list):
        for item in result["content"]:
            if item.get("type") == "text":
                item["text"] = item["text"].replace("simple", "[redacted]")
    return {"interceptorOutputVersion": "1.0",
            "mcp": {"transformedGatewayResponse": {"statusCode": response["statusCode"], "body": body}}}


def slow(event, context):
    time.sleep(2)
    return pass_through(event, context)


def malformed(event, context):
    return {"nope": 1}


def raise_(event, context):
    raise RuntimeError("interceptor bug")


HANDLERS = {"pass_through": pass_through, "gate": gate, "shape": shape, "slow": slow,
            "malformed": malformed, "raise": raise_}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    stats = {"signed": 0, "unsigned": 0, "refused": 0, "last": None}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.reply(200, stats)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = urllib.parse.unquote(self.path)
            prefix, suffix = "/2015-03-31/functions/", "/invocations"
            if path.startswith(prefix) and path.endswith(suffix):
                if not valid_signature(self, body, "lambda", "us-east-1"):
                    stats["refused"] += 1
                    self.reply(403, {"message": "The request signature we calculated does not match"})
                    return
                stats["signed"] += 1
                name = path[len(prefix):-len(suffix)].split(":")[6]
            elif path.startswith("/url/"):
                stats["unsigned"] += 1
                name = path[len("/url/"):]
            else:
                self.reply(404, {"message": "no such function"})
                return
            event = json.loads(body)
            stats["last"] = event
            try:
                self.reply(200, HANDLERS[name](event, None))
            except Exception as err:  # the Invoke API reports a function error
                self.reply(200, {"errorMessage": str(err), "errorType": type(err).__name__},
                           {"X-Amz-Function-Error": "Unhandled"})

        def reply(self, status, payload, headers=None):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
