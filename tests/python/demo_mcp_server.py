"""An OAuth-protected MCP server (official Python SDK, `mcp` 2.x) for tests
and the local demo.

It is a resource server: it accepts only RS256 JWT access tokens signed by
`--issuer` (keys from its JWKS) whose audience is this server's own URL
(`--resource`, RFC 8707), serves Protected Resource Metadata, and answers 401
with a `WWW-Authenticate` challenge otherwise.

Tools: `whoami` (the caller's `sub`), `echo`, `add`, and `write_note`, which
needs the `write` scope: without it the server answers 403
`insufficient_scope` (RFC 6750), as per-tool scopes are meant to work.

With `--dpop` it takes only DPoP-bound tokens (RFC 9449): the `DPoP`
scheme, a fresh proof per request for this URL with the token's hash, signed
by the key the token's `cnf.jkt` names, carrying the nonce it hands out.

    python demo_mcp_server.py --port 8200 --issuer http://127.0.0.1:8100
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import time

import uvicorn

import jwt
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings


class JwtVerifier:
    """Validates RS256 JWTs from one issuer for one audience."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwt.PyJWKClient(f"{issuer}/jwks", cache_keys=True)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as err:
            print(f"token refused: {err}", file=sys.stderr, flush=True)
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=self.audience,
            subject=str(claims["sub"]),
            claims=claims,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True, help="authorization server issuer URL")
    parser.add_argument("--resource", help="this server's URL (default http://127.0.0.1:PORT/mcp)")
    parser.add_argument("--name", default="demo")
    parser.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id")
    parser.add_argument(
        "--era",
        choices=["all", "2025"],
        default="all",
        help="2025: refuse 2026-07-28 requests, as a server of the 2025 eras does",
    )
    parser.add_argument("--dpop", action="store_true", help="take only DPoP-bound tokens, with nonces")
    args = parser.parse_args()
    resource = args.resource or f"http://127.0.0.1:{args.port}/mcp"

    server = MCPServer(
        name=args.name,
        token_verifier=JwtVerifier(args.issuer, resource),
        auth=AuthSettings(
            issuer_url=args.issuer,
            resource_server_url=resource,
            required_scopes=["read"],
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def whoami() -> str:
        """Returns the subject of the access token that called this tool."""
        token = get_access_token()
        return token.subject if token and token.subject else "unknown"

    @server.tool()
    def echo(text: str) -> str:
        """Echoes the text back."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    @server.tool()
    def write_note(text: str = "") -> str:
        """Stores a note (needs the write scope)."""
        token = get_access_token()
        return f"noted for {token.subject if token else 'unknown'}"

    app = server.streamable_http_app(
        stateless_http=args.stateless,
        json_response=args.stateless,
        host="127.0.0.1",
    )
    app = WriteScope(app, resource)
    if args.era == "2025":
        app = Only2025(app)
    if args.dpop:
        app = DpopOnly(app, resource)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


class WriteScope:
    """ASGI wrapper: `tools/call write_note` needs the `write` scope; without
    it, 403 with `WWW-Authenticate: Bearer error="insufficient_scope"`.
    (The token itself is validated by the server behind.)"""

    def __init__(self, app, resource: str) -> None:
        self.app = app
        self.resource = resource

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("method") == "tools/call" and (request.get("params") or {}).get("name") == "write_note":
            headers = dict(scope.get("headers") or [])
            token = headers.get(b"authorization", b"").decode().removeprefix("Bearer ").strip()
            try:
                scopes = str(jwt.decode(token, options={"verify_signature": False}).get("scope", "")).split()
            except jwt.PyJWTError:
                scopes = []
            if "write" not in scopes:
                challenge = f'Bearer error="insufficient_scope", scope="read write", resource_metadata="{self.resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")}"'
                await send({"type": "http.response.start", "status": 403, "headers": [(b"www-authenticate", challenge.encode()), (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error":"insufficient_scope"}'})
                return
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DpopOnly:
    """ASGI wrapper: a request with a token must present it with the DPoP
    scheme and a valid proof (RFC 9449 §4.3, §7); the token then goes on as
    a bearer token to the server behind, which validates it."""

    def __init__(self, app, resource: str) -> None:
        self.app = app
        self.resource = resource
        self.nonce = secrets.token_urlsafe(16)
        self.seen: set[str] = set()

    async def refuse(self, send, error: str, description: str) -> None:
        challenge = f'DPoP algs="ES256", error="{error}", error_description="{description}"'
        headers = [(b"www-authenticate", challenge.encode()), (b"content-type", b"application/json")]
        if error == "use_dpop_nonce":
            headers.append((b"dpop-nonce", self.nonce.encode()))
        print(f"dpop: refused ({error}: {description})", file=sys.stderr, flush=True)
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps({"error": error}).encode()})

    def check(self, scope, token: str, proof: str | None) -> tuple[str, str] | None:
        """Why the proof fails, as (error, description), or None."""
        if not proof:
            return ("invalid_dpop_proof", "no DPoP proof")
        try:
            header = jwt.get_unverified_header(proof)
            if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256":
                return ("invalid_dpop_proof", "typ or alg")
            jwk = header.get("jwk") or {}
            if "d" in jwk:
                return ("invalid_dpop_proof", "private key in the proof")
            claims = jwt.decode(proof, jwt.PyJWK(jwk).key, algorithms=["ES256"])
        except (jwt.PyJWTError, ValueError, TypeError) as err:
            return ("invalid_dpop_proof", f"unverifiable proof: {err}")
        if claims.get("htm") != scope.get("method") or claims.get("htu") != self.resource:
            return ("invalid_dpop_proof", "htm or htu")
        if abs(time.time() - float(claims.get("iat", 0))) > 300:
            return ("invalid_dpop_proof", "iat")
        if claims.get("ath") != b64url(hashlib.sha256(token.encode()).digest()):
            return ("invalid_dpop_proof", "ath")
        jti = str(claims.get("jti", ""))
        if not jti or jti in self.seen:
            return ("invalid_dpop_proof", "jti missing or replayed")
        thumbprint = b64url(hashlib.sha256(json.dumps(
            {"crv": jwk.get("crv"), "kty": jwk.get("kty"), "x": jwk.get("x"), "y": jwk.get("y")},
            separators=(",", ":"), sort_keys=True).encode()).digest())
        try:
            cnf = jwt.decode(token, options={"verify_signature": False}).get("cnf") or {}
        except jwt.PyJWTError:
            cnf = {}
        if cnf.get("jkt") != thumbprint:
            return ("invalid_token", "the token is not bound to the proof's key")
        if claims.get("nonce") != self.nonce:
            return ("use_dpop_nonce", "a nonce is required")
        self.seen.add(jti)
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode()
        scheme, _, token = authorization.partition(" ")
        if not authorization:
            await self.app(scope, receive, send)
            return
        if scheme.lower() != "dpop":
            await self.refuse(send, "invalid_token", "DPoP-bound tokens only")
            return
        proof = headers.get(b"dpop", b"").decode() or None
        failure = self.check(scope, token.strip(), proof)
        if failure:
            await self.refuse(send, *failure)
            return
        rewritten = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", b"dpop")]
        rewritten.append((b"authorization", f"Bearer {token.strip()}".encode()))
        await self.app({**scope, "headers": rewritten}, receive, send)


class Only2025:
    """ASGI wrapper: answers 2026-07-28 requests the way a 2025 server does
    (400, unsupported protocol version)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"mcp-protocol-version") == b"2026-07-28":
                body = json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": -32600, "message": "Bad Request: Unsupported protocol version: 2026-07-28"},
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


if __name__ == "__main__":
    main()
