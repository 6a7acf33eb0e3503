"""Security headers on every response, and CORS for the one endpoint browsers call.

- `X-Content-Type-Options: nosniff`: a JSON body is never sniffed into something a browser runs.
- `Cache-Control: no-store` unless the handler chose a policy (the cached status reads answer
  `private, no-cache` with an `ETag`, RFC 9111 section 5.2.2): API answers hold payment data.
- `Referrer-Policy: no-referrer`: the API's URLs (object ids) never leak to another site.
- `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'` on JSON: a response
  opened in a browser loads nothing and is never framed. HTML (`/docs`) is left alone.
- `Strict-Transport-Security` when the request came over TLS (directly, or `X-Forwarded-Proto:
  https` from the proxy in front): RFC 6797 has browsers ignore it over plain HTTP anyway.

CORS (the Fetch standard) on `/v1/tokens` only: any origin may POST card details there with
`Authorization` (a publishable key) and `Content-Type`. `*` is enough because no credentials
in the Fetch sense (cookies, HTTP authentication the browser adds) are involved; `Authorization`
must be named, the `*` wildcard of `Access-Control-Allow-Headers` does not cover it.
"""

from __future__ import annotations

from starlette.types import Scope, Send

TOKENS_PATH = "/v1/tokens"
HSTS = b"max-age=63072000; includeSubDomains"
CSP = b"default-src 'none'; frame-ancestors 'none'"
EXPOSED = b"Paygate-Version, RateLimit, RateLimit-Policy, Retry-After, Idempotent-Replayed"
_ALWAYS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


def apply(
    headers: list[tuple[bytes, bytes]],
    extra: list[tuple[bytes, bytes]],
    *,
    secure: bool,
    cors: bool,
) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    out = headers + extra + _ALWAYS
    if b"cache-control" not in names:
        out.append((b"cache-control", b"no-store"))
    content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
    if content_type.startswith(b"application/json"):
        out.append((b"content-security-policy", CSP))
    if secure:
        out.append((b"strict-transport-security", HSTS))
    if cors:
        out += [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-expose-headers", EXPOSED),
        ]
    return out


def cors_applies(path: str, headers: dict[bytes, bytes]) -> bool:
    return path.rstrip("/") == TOKENS_PATH and b"origin" in headers


def is_preflight(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """A CORS preflight (Fetch standard, section 3.2.2) for `/v1/tokens`."""
    return (
        scope["method"] == "OPTIONS"
        and cors_applies(scope["path"], headers)
        and b"access-control-request-method" in headers
    )


async def preflight(send: Send) -> None:
    """Allow a POST from any origin with the headers tokenization needs; browsers may keep this
    answer 10 minutes."""
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-methods", b"POST"),
                (b"access-control-allow-headers", b"Authorization, Content-Type"),
                (b"access-control-max-age", b"600"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
