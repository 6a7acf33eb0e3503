"""Random requests at every endpoint of the app (found from its routes, so a new endpoint is
covered without touching this file), with a merchant's key, the admin key, a publishable key or
none: never a 5xx, and every refusal answers the contract error shape without repeating card
data. SQLite only: the point is the HTTP layer's answers, and it keeps the run short."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fastapi.routing
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from paygate import money
from paygate.api.app import create_app
from paygate.platform.db.tables import (
    customers,
    outbox,
    payment_methods,
    payments,
    transaction_log,
    vault_cards,
    vault_cvcs,
)
from paygate.runtime import Runtime
from paygate.vault.cards import luhn_valid
from tests.conftest import make_settings, new_merchant
from tests.support import ADMIN_KEY, idem, payment_body

DIGITS = "0123456789"
# The error type each refusal status carries (DESIGN.md section 4, Errors).
TYPES_BY_STATUS = {
    400: {"invalid_request_error", "card_error"},
    401: {"authentication_error"},
    403: {"permission_error"},
    404: {"invalid_request_error"},
    405: {"invalid_request_error"},
    409: {"invalid_request_error", "idempotency_error"},
    413: {"invalid_request_error"},
    422: {"idempotency_error"},
    429: {"rate_limit_error"},
}


def endpoints(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route. Newer FastAPI keeps included routers as
    nodes and flattens them on demand; older versions list the routes themselves."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = flatten(app.routes) if flatten is not None else app.routes
    found = set()
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods:  # mounted apps (the bank simulator) have no methods of their own
            found.update((method, path) for method in methods)
    return sorted(found)


@dataclass(repr=False)  # failure reports show the request, not the whole app
class Env:
    app: FastAPI
    client: httpx.AsyncClient
    runtime: Runtime
    keys: dict[str, str | None]
    ids: list[str]
    unlimited_key: str = ""
    routes: list[tuple[str, str]] = field(default_factory=list)
    openapi: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
async def env(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    settings_ = make_settings(tmp_path, sqlite_url)
    runtime = Runtime.from_settings(settings_)
    app = create_app(settings_, runtime)
    # A 500 comes back as a response (to be reported with its request), not as a raised error.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://paygate.test") as client:
        merchant = await new_merchant(client)
        auth = {"Authorization": f"Bearer {merchant['api_key']}"}
        # The near-valid payments go out as fast as the test can send them: from a merchant
        # without rate limits, so that they reach validation and the database, not a 429.
        r = await client.post(
            "/v1/merchants",
            json={"name": "Unlimited", "tier": "unlimited"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert r.status_code == 201, r.text
        unlimited = r.json()
        body = payment_body(customer={"email": "jenny@example.com"})
        r = await client.post("/v1/payments", json=body, headers={**auth, **idem()})
        assert r.status_code == 202, r.text
        payment = r.json()
        yield Env(
            app=app,
            client=client,
            runtime=runtime,
            keys={
                "merchant": merchant["api_key"],
                "admin": ADMIN_KEY,
                "publishable": merchant["publishable_key"],
                "none": None,
            },
            unlimited_key=unlimited["api_key"],
            ids=[payment["id"], payment["customer"], merchant["id"]],
            routes=endpoints(app),
            openapi=app.openapi(),
        )
    await runtime.close()


# --- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities too: Python's JSON reads them
    st.text(max_size=20),
    st.text(st.characters(codec=None), max_size=5),  # lone surrogates, NUL
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid number of 12 to 20 digits, sometimes grouped by fours."""
    length = draw(st.integers(12, 20))
    body = draw(st.text(DIGITS, min_size=length - 1, max_size=length - 1))
    number = next(body + d for d in DIGITS if luhn_valid(body + d))
    if draw(st.booleans()):
        sep = draw(st.sampled_from(" -"))
        number = sep.join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


def payment_fields(ids: list[str]) -> dict[tuple[str, ...], st.SearchStrategy[Any]]:
    """Per field of a payment request: values around its valid range."""
    return {
        ("amount",): st.one_of(
            st.integers(-3, 3),
            st.integers(money.MAX_AMOUNT - 2, money.MAX_AMOUNT + 2),
            st.text(DIGITS, min_size=1, max_size=4),
            st.floats(0, 100),
        ),
        ("currency",): st.one_of(
            st.sampled_from(["usd", "USD", "jpy", "kwd", "clf", "xau", "xdr", "usx", "us", ""]),
            st.text(max_size=4),
        ),
        ("payment_method", "card", "number"): st.one_of(
            card_numbers(), st.text("0123456789 -", max_size=25), st.text(max_size=45)
        ),
        ("payment_method", "card", "exp_month"): st.integers(-1, 14),
        ("payment_method", "card", "exp_year"): st.integers(1999, 2102),
        ("payment_method", "card", "cvc"): st.one_of(
            st.text(DIGITS, max_size=9), st.text(max_size=5)
        ),
        ("capture",): st.booleans(),
        ("customer",): st.fixed_dictionaries(
            {},
            optional={
                "id": st.one_of(st.sampled_from(ids), st.text(max_size=41)),
                "email": st.one_of(st.emails(), st.text(max_size=20)),
                "name": st.text(max_size=201),
            },
        ),
        ("description",): st.text(max_size=1001),
        ("metadata",): st.dictionaries(st.text(max_size=41), st.text(max_size=501), max_size=51),
    }


@st.composite
def near_valid_payments(draw: st.DrawFn, ids: list[str]) -> Any:
    """A valid payment request with a few fields changed: a value near its limits, any JSON
    value, the field removed, or an unknown field beside it. Validation deep inside the body
    (the card, the customer, metadata) is reached this way, which random JSON never does."""
    body = payment_body(
        customer={"email": "jenny@example.com", "name": "Jenny"},
        description="Order #1042",
        metadata={"order_id": "1042"},
    )
    fields = payment_fields(ids)
    for path in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        *parents, last = path
        node = body
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["near", "near", "json", "drop", "unknown"]))
        if action == "near":
            node[last] = draw(fields[path])
        elif action == "json":
            node[last] = draw(json_values)
        elif action == "drop":
            node.pop(last, None)
        else:
            node[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return body


def resolve(schema: dict[str, Any], openapi: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = openapi["components"]["schemas"][name]
    return schema


def from_schema(
    schema: dict[str, Any], openapi: dict[str, Any], ids: list[str], depth: int = 0
) -> st.SearchStrategy[Any]:
    """Values shaped by a request schema of the app's OpenAPI document, mixed with any JSON."""
    schema = resolve(schema, openapi)
    options: list[st.SearchStrategy[Any]] = [json_values]
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            if depth < 4:
                options.append(from_schema(sub, openapi, ids, depth + 1))
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    kind = schema.get("type")
    if kind == "object" and depth < 4:
        props = {
            name: from_schema(sub, openapi, ids, depth + 1)
            for name, sub in schema.get("properties", {}).items()
        }
        required = set(schema.get("required", []))
        options.append(
            st.fixed_dictionaries(
                {k: v for k, v in props.items() if k in required},
                optional={k: v for k, v in props.items() if k not in required},
            )
        )
    elif kind == "integer":
        low, high = schema.get("minimum", 0), schema.get("maximum", money.MAX_AMOUNT)
        options.append(st.integers(low - 2, high + 2))
    elif kind == "string":
        options.append(
            st.one_of(
                st.text(max_size=schema.get("maxLength", 50) + 2), st.sampled_from(ids), st.emails()
            )
        )
    elif kind == "boolean":
        options.append(st.booleans())
    return st.one_of(*options)


def operation(openapi: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = openapi.get("paths", {}).get(path, {}).get(method.lower(), {})
    return found


def bodies(env: Env, method: str, path: str) -> st.SearchStrategy[Any]:
    op = operation(env.openapi, method, path)
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    options: list[st.SearchStrategy[Any]] = [json_values]
    if content:
        options.append(from_schema(content["schema"], env.openapi, env.ids))
    if (method, path) == ("POST", "/v1/payments"):
        options += [near_valid_payments(env.ids)] * 3
    return st.one_of(*options)


def query_params(env: Env, method: str, path: str) -> st.SearchStrategy[dict[str, str]]:
    op = operation(env.openapi, method, path)
    names = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
    values = st.one_of(
        st.text(max_size=45),
        st.integers(-(2**70), 2**70).map(str),
        st.integers(-2, 102).map(str),
        st.sampled_from(env.ids),
        st.sampled_from(["pending", "canceled", "succeeded", "usd"]),
    )
    keys = (
        st.one_of(st.sampled_from(names), st.text(min_size=1, max_size=10))
        if names
        else (st.text(min_size=1, max_size=10))
    )
    return st.dictionaries(keys, values, max_size=4)


def fill(path: str, draw: st.DrawFn, ids: list[str]) -> str:
    """The path template with every `{param}` replaced by a real id or random text."""

    def one(_: re.Match[str]) -> str:
        value = draw(
            st.one_of(st.sampled_from(ids), st.text(min_size=1, max_size=50), card_numbers())
        )
        return quote(value, safe="")

    return re.sub(r"\{[^}]+\}", one, path)


printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@dataclass
class Sent:
    template: str
    method: str
    url: str
    headers: dict[str, str]
    content: bytes

    def describe(self) -> str:
        return f"{self.method} {self.url} {self.headers} {self.content[:500]!r}"


@st.composite
def requests(draw: st.DrawFn, env: Env) -> Sent:
    api = [r for r in env.routes if r[1].startswith("/v1/")]
    method, template = draw(st.one_of(st.sampled_from(env.routes), st.sampled_from(api)))
    path = fill(template, draw, env.ids)
    query = draw(query_params(env, method, template))
    url = str(httpx.URL(path, params=query)) if query else path
    headers: dict[str, str] = {}
    # Mostly a merchant's key, so that requests get past authentication to validation.
    key = env.keys[draw(st.sampled_from(["merchant", "merchant", "merchant", *sorted(env.keys)]))]
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    idempotency = draw(st.sampled_from(["uuid", "uuid", "none", "any"]))
    if idempotency == "uuid":
        headers["Idempotency-Key"] = str(uuid.uuid4())
    elif idempotency == "any":
        headers["Idempotency-Key"] = draw(printable)
    # Only values that cannot hold a request open: without the pipeline nothing settles.
    prefer = draw(st.sampled_from([None, "wait=0", "wait=abc", "wait=-1", "respond-async"]))
    if prefer is not None:
        headers["Prefer"] = prefer
    content = b""
    if method in ("POST", "PUT", "PATCH", "DELETE") or draw(st.booleans()):
        kind = draw(st.sampled_from(["json", "json", "json", "raw", "none"]))
        if kind == "json":
            body = draw(bodies(env, method, template))
            content = json.dumps(body, allow_nan=True).encode()
            headers["Content-Type"] = draw(
                st.sampled_from(
                    ["application/json", "application/json; charset=utf-8", "text/plain"]
                )
            )
        elif kind == "raw":
            content = draw(st.binary(max_size=64))
            headers["Content-Type"] = "application/json"
    return Sent(template, method, url, headers, content)


def check(sent: Sent, r: httpx.Response) -> None:
    where = f"{r.status_code} {r.text[:500]} for {sent.describe()}"
    assert r.status_code < 500, where
    if 200 <= r.status_code < 300 or sent.method == "HEAD":
        return
    assert r.headers.get("content-type", "").startswith("application/json"), where
    body = r.json()
    assert list(body) == ["error"], where
    error = body["error"]
    assert sorted(error) == ["code", "message", "param", "type"], where
    assert error["type"] in TYPES_BY_STATUS.get(r.status_code, set()), where
    assert isinstance(error["code"], str) and error["code"], where
    assert isinstance(error["message"], str) and error["message"], where
    assert error["param"] is None or isinstance(error["param"], str), where
    # No refusal repeats a long number from the request: it may be a card number.
    sent_text = re.sub(r"[ -]|%20", "", sent.url + sent.content.decode("latin-1"))
    for digits in set(re.findall(r"\d{12,}", sent_text)):
        assert digits not in re.sub(r"[ -]", "", r.text), where


async def test_endpoints_are_found_from_the_routes(env: Env) -> None:
    for endpoint in (
        ("POST", "/v1/payments"),
        ("GET", "/v1/payments/{payment_id}"),
        ("POST", "/v1/refunds"),
        ("GET", "/v1/customers"),
        ("POST", "/v1/merchants"),
        ("GET", "/healthz"),
    ):
        assert endpoint in env.routes, env.routes


FUZZ = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app serves every example: that is the point
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@given(data=st.data())
@settings(FUZZ, max_examples=400)
async def test_random_requests_never_fail_and_refusals_keep_the_contract(
    env: Env, data: st.DataObject
) -> None:
    sent = data.draw(requests(env))
    r = await env.client.request(
        sent.method, sent.url, headers=sent.headers, content=sent.content or None
    )
    check(sent, r)
    # `pytest --hypothesis-show-statistics` shows what the run reached.
    event(f"{sent.method} {sent.template} {r.status_code}")


EFFECTS = (payments, payment_methods, vault_cards, vault_cvcs, transaction_log, outbox, customers)


async def effect_rows(runtime: Runtime) -> dict[str, int]:
    async with runtime.db.read() as conn:
        return {
            t.name: int(await conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0)
            for t in EFFECTS
        }


@given(data=st.data())
@settings(FUZZ, max_examples=150)
async def test_near_valid_payments_are_created_whole_or_not_at_all(
    env: Env, data: st.DataObject
) -> None:
    body = data.draw(near_valid_payments(env.ids))
    headers = {
        "Authorization": f"Bearer {env.unlimited_key}",
        "Content-Type": "application/json",
        **idem(),
    }
    sent = Sent("/v1/payments", "POST", "/v1/payments", headers, json.dumps(body).encode())
    before = await effect_rows(env.runtime)
    r = await env.client.post(sent.url, headers=headers, content=sent.content)
    check(sent, r)
    event(f"{r.status_code} {r.json()['error']['param'] if r.status_code >= 400 else ''}")
    after = await effect_rows(env.runtime)
    if r.status_code != 202:
        assert 400 <= r.status_code < 500 and after == before, (r.text, body)
        return
    # Accepted: written whole, and read back as it was answered.
    assert after["payments"] == before["payments"] + 1, body
    assert after["outbox"] == before["outbox"] + 1, body
    payment = r.json()
    got = await env.client.get(f"/v1/payments/{payment['id']}", headers=headers)
    assert got.json() == payment
    card = body["payment_method"]["card"]
    assert payment["payment_method"]["card"]["last4"] == re.sub(r"[ -]", "", card["number"])[-4:]
    assert payment["amount"] == body["amount"]
    assert payment["currency"] == body["currency"].lower()
    assert payment["metadata"] == body.get("metadata", {})
    assert payment["description"] == body.get("description")
