"""An MCP server behind AWS IAM, for tests: every POST to /mcp must carry a
valid SigV4 signature for the given service and region, checked with
botocore's signer (the same code AWS's SDKs sign with) against the test
credentials. A valid request gets a minimal MCP answer; anything else 403.

    python sigv4_upstream.py --port P --service execute-api --region us-east-1
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACCESS_KEY = "test"
SECRET_KEY = "test"


def valid_signature(handler, body, service, region):
    auth = handler.headers.get("Authorization", "")
    prefix = "AWS4-HMAC-SHA256 "
    if not auth.startswith(prefix):
        return False
    try:
        parts = dict(p.strip().split("=", 1) for p in auth[len(prefix):].split(","))
        credential = parts["Credential"].split("/")
        if credential[0] != ACCESS_KEY or credential[2] != region or credential[3] != service:
            return False
        signed = parts["SignedHeaders"].split(";")
        headers = {h: handler.headers[h] for h in signed if handler.headers.get(h) is not None}
        if len(headers) != len(signed):
            return False
        # What the request says must be signed too, not only the host.
        for needed in ("host", "content-type", "x-amz-date", "mcp-protocol-version",
                       "mcp-session-id", "mcp-method", "mcp-name"):
            if handler.headers.get(needed) is not None and needed not in signed:
                return False
        url = "http://%s%s" % (handler.headers["Host"], handler.path)
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        request.context["timestamp"] = handler.headers["X-Amz-Date"]
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, region)
        canonical = signer.canonical_request(request)
        string_to_sign = signer.string_to_sign(request, canonical)
        return signer.signature(string_to_sign, request) == parts["Signature"]
    except (KeyError, IndexError, ValueError):
        return False


def answer(message):
    method = message.get("method")
    mid = message.get("id")
    if mid is None:
        return 202, None
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "iam", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "signed ok"}]}
    else:
        return 400, {"jsonrpc": "2.0", "id": mid,
                     "error": {"code": -32601, "message": "Method not found"}}
    return 200, {"jsonrpc": "2.0", "id": mid, "result": result}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--region", required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/mcp" or not valid_signature(self, body, args.service, args.region):
                self.reply(403, {"message": "The request signature we calculated does not match"})
                return
            try:
                status, doc = answer(json.loads(body))
            except ValueError:
                status, doc = 400, {"message": "not JSON"}
            self.reply(status, doc)

        def reply(self, status, doc):
            data = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
