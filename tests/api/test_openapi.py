"""The API document and the operational endpoints.

`/openapi.json` is checked by hand (no validator package is installed): its structure, that every
`/v1` operation is written up (a summary of its own, examples that the API accepts, its success
responses with schemas, the Idempotency-Key header), and that what the API really answers
conforms to the schemas it documents, on both databases.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.api.app import create_app
from paygate.platform.db.tables import payments
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.support import ADMIN_KEY, idem, payment_body

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
JSON = "application/json"


@pytest.fixture
async def sqlite_client(tmp_path: Path, sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API on SQLite only: the document does not depend on the database."""
    settings = make_settings(tmp_path, sqlite_url)
    runtime = Runtime.from_settings(settings)
    transport = httpx.ASGITransport(app=create_app(settings, runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://paygate.test") as c:
        yield c
    await runtime.close()


@pytest.fixture
async def doc(sqlite_client: httpx.AsyncClient) -> dict[str, Any]:
    r = await sqlite_client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(JSON)
    body: dict[str, Any] = r.json()
    return body


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def v1_operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for m, p, op in operations(doc) if p.startswith("/v1/")]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/components/schemas/"), ref
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def walk(node: Any) -> Iterator[Any]:
    """Every dict and list inside `node`, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from walk(child)


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def problems(doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "$") -> list[str]:
    """Where `value` departs from the JSON schema `schema` (the subset the document uses).

    Objects with `properties` are closed: a field the API sends but the document does not name
    is a problem, so the document cannot fall behind the objects."""
    schema = resolve(doc, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [problems(doc, s, value, at) for s in schema[key]]
            if all(branches):
                return [f"{at}: matches none of {key}: {branches}"]
            return []
    found: list[str] = []
    for sub in schema.get("allOf", []):
        found += problems(doc, sub, value, at)
    if "const" in schema and value != schema["const"]:
        found.append(f"{at}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{at}: {value!r} not in {schema['enum']}")
    kind = schema.get("type")
    if kind is not None:
        is_bool = isinstance(value, bool)
        if not isinstance(value, _TYPES[kind]) or (is_bool and kind in ("integer", "number")):
            return [*found, f"{at}: {value!r} is not {kind}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{at}: missing {name}")
        extra = schema.get("additionalProperties", not props)
        for name, item in value.items():
            if name in props:
                found += problems(doc, props[name], item, f"{at}.{name}")
            elif extra is False:
                found.append(f"{at}: {name} is not documented")
            elif isinstance(extra, dict):
                found += problems(doc, extra, item, f"{at}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(doc, schema["items"], item, f"{at}[{i}]")
    return found


def operation(doc: dict[str, Any], method: str, url: str) -> tuple[str, dict[str, Any]]:
    """The documented operation that serves `method url`."""
    path = url.split("?", 1)[0]
    for template, item in doc["paths"].items():
        if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), path) and method in item:
            return template, item[method]
    raise AssertionError(f"{method.upper()} {path} is not documented")


def assert_conforms(doc: dict[str, Any], r: httpx.Response) -> None:
    """The response's status is documented for its operation, and its body fits the schema."""
    method = r.request.method.lower()
    template, op = operation(doc, method, r.request.url.path)
    responses = op["responses"]
    status = str(r.status_code)
    assert status in responses or (r.status_code >= 400 and "default" in responses), (
        f"{method.upper()} {template} answered {status}, documented: {sorted(responses)}"
    )
    schema = responses.get(status, responses.get("default"))["content"][JSON]["schema"]
    found = problems(doc, schema, r.json())
    assert not found, f"{method.upper()} {template} {status}: {found}"


# The document's structure.


async def test_document_is_openapi_3(doc: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.\d+\.\d+", doc["openapi"])
    assert doc["info"]["title"] == "Paygate"
    assert doc["info"]["version"]
    assert "Idempotency-Key" in doc["info"]["description"]
    for method, path, op in operations(doc):
        assert path.startswith("/"), path
        assert op["responses"], f"{method} {path}"
        for status in op["responses"]:
            assert status == "default" or re.fullmatch(r"[1-5]\d\d", status), status
        # Every templated segment is a documented, required path parameter, and vice versa.
        params = op.get("parameters", [])
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(re.findall(r"\{([^}]+)\}", path)), f"{method} {path}"
        for p in params:
            assert p["in"] in {"path", "query", "header", "cookie"}
            assert "schema" in p, f"{method} {path} {p['name']}"
            if p["in"] == "path":
                assert p["required"] is True
    op_ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(op_ids) == len(set(op_ids))


async def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs = [n["$ref"] for n in walk(doc) if isinstance(n, dict) and "$ref" in n]
    assert refs
    for ref in refs:
        resolve(doc, {"$ref": ref})


async def test_the_v1_api_is_documented(doc: dict[str, Any]) -> None:
    documented = {(m, p) for m, p, _ in v1_operations(doc)}
    for method, path in [
        ("post", "/v1/merchants"),
        ("post", "/v1/payments"),
        ("get", "/v1/payments"),
        ("get", "/v1/payments/{payment_id}"),
        ("post", "/v1/payments/{payment_id}/capture"),
        ("post", "/v1/payments/{payment_id}/cancel"),
        ("get", "/v1/payments/{payment_id}/transaction_log"),
        ("post", "/v1/refunds"),
        ("get", "/v1/refunds"),
        ("get", "/v1/refunds/{refund_id}"),
        ("get", "/v1/customers/{customer_id}"),
    ]:
        assert (method, path) in documented


async def test_every_v1_operation_has_a_summary_of_its_own(doc: dict[str, Any]) -> None:
    for method, path, op in v1_operations(doc):
        text = op.get("summary") or op.get("description")
        assert text, f"{method.upper()} {path} has no summary"
        # Without one, the framework titles the handler's name ("Get Payment"); the operation
        # id starts with that name, followed by the path ("get_payment_v1_payments_...").
        handler = op["operationId"].split("_v1_", 1)[0]
        derived = handler.replace("_", " ").title()
        assert text != derived, f"{method.upper()} {path}: {text!r} is the handler's name"


def examples_of(doc: dict[str, Any], op: dict[str, Any]) -> list[Any]:
    """The request examples of `op`: on the media type, or on its (resolved) schema."""
    media = op["requestBody"]["content"][JSON]
    found = [media["example"]] if "example" in media else []
    found += [e["value"] for e in media.get("examples", {}).values()]
    schema = resolve(doc, media["schema"])
    found += schema.get("examples", [])
    return found


async def test_every_post_documents_its_body_with_a_schema_and_an_example(
    doc: dict[str, Any],
) -> None:
    posts = [(p, op) for m, p, op in v1_operations(doc) if m == "post"]
    assert len(posts) >= 5
    for path, op in posts:
        media = op["requestBody"]["content"][JSON]
        assert "schema" in media, path
        assert examples_of(doc, op), f"POST {path} has no example"


async def test_every_operation_documents_its_success_response_with_a_schema(
    doc: dict[str, Any],
) -> None:
    for method, path, op in operations(doc):
        ok = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert ok, f"{method.upper()} {path} documents no success"
        for status, response in ok.items():
            assert response.get("description"), f"{method.upper()} {path} {status}"
            content = response["content"]
            # JSON, or a file's own media type (a payout file is application/xml).
            schema = (content.get(JSON) or next(iter(content.values())))["schema"]
            assert resolve(doc, schema), f"{method.upper()} {path} {status}: empty schema"


async def test_idempotency_key_is_documented_on_every_post(doc: dict[str, Any]) -> None:
    for method, path, op in v1_operations(doc):
        if method != "post":
            continue
        headers = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in headers, f"POST {path}"
        key = headers["Idempotency-Key"]
        assert key["schema"]["type"] == "string"
        # Required on creation of payments and refunds (DESIGN.md section 2), optional elsewhere.
        required = path in ("/v1/payments", "/v1/refunds")
        assert bool(key.get("required")) is required, f"POST {path}"


async def test_errors_are_documented_in_the_contract_shape(doc: dict[str, Any]) -> None:
    # The framework's 422 validation shape is never sent: invalid requests answer 400.
    text = str(doc)
    assert "HTTPValidationError" not in text
    error = doc["components"]["schemas"]["ErrorOut"]
    detail = resolve(doc, error["properties"]["error"])
    assert set(detail["properties"]) == {"type", "code", "message", "param"}
    for method, path, op in v1_operations(doc):
        responses = op["responses"]
        assert "default" in responses, f"{method.upper()} {path}"
        if "requestBody" in op:
            assert "400" in responses, f"{method.upper()} {path}"
        for status, response in responses.items():
            if not status.startswith("2"):
                assert response["content"][JSON]["schema"] == {
                    "$ref": "#/components/schemas/ErrorOut"
                }, f"{method.upper()} {path} {status}"


async def test_documented_examples_are_accepted(
    sqlite_client: httpx.AsyncClient, doc: dict[str, Any]
) -> None:
    client = sqlite_client
    r = await client.post("/v1/merchants", json={"name": "Docs"}, headers=ADMIN)
    auth = {"Authorization": f"Bearer {r.json()['api_key']}"}
    sent = 0
    for method, path, op in v1_operations(doc):
        if method != "post":
            continue
        url = re.sub(r"\{[^}]+\}", "missing_0", path)
        admin_only = ("/v1/merchants", "/v1/settlements/run", "/v1/reconciliation")
        headers = ADMIN if path.startswith(admin_only) else auth
        for example in examples_of(doc, op):
            r = await client.post(url, json=example, headers={**headers, **idem()})
            sent += 1
            if r.status_code == 502 and path == "/v1/reconciliation/run":
                # Validated; there is no bank here to fetch the day's report from.
                assert r.json()["error"]["code"] == "bank_report_unavailable"
                continue
            # Accepted by validation: done, or an object the example names does not exist here.
            assert r.status_code in (200, 201, 202, 404), f"POST {path} {example}: {r.text}"
            if r.status_code == 404:
                assert r.json()["error"]["code"] == "resource_missing"
            assert_conforms(doc, r)
    assert sent >= 5


# What the API answers fits what it documents, on both databases.


async def make_payment(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> str:
    r = await client.post("/v1/payments", json=payment_body(**body), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    payment_id: str = r.json()["id"]
    return payment_id


async def test_responses_conform_to_the_document(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    doc = (await client.get("/openapi.json")).json()
    seen: list[httpx.Response] = []

    async def call(method: str, url: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        r = await client.request(method, url, headers=headers, **kw)
        assert_conforms(doc, r)
        seen.append(r)
        return r

    merchant = (await call("POST", "/v1/merchants", ADMIN, json={"name": "Acme"})).json()
    await call("GET", f"/v1/merchants/{merchant['id']}", ADMIN)
    await call("GET", "/v1/merchants", ADMIN)
    auth = {"Authorization": f"Bearer {merchant['api_key']}"}

    customer = await call("POST", "/v1/customers", auth, json={"email": "jenny@example.com"})
    await call("GET", f"/v1/customers/{customer.json()['id']}", auth)
    await call("GET", "/v1/customers", auth)

    body = payment_body(customer={"email": "jenny@example.com"}, metadata={"order": "1"})
    pay = (await call("POST", "/v1/payments", {**auth, **idem()}, json=body)).json()
    await call("GET", f"/v1/payments/{pay['id']}", auth)
    await call("GET", "/v1/payments", auth)
    await call("GET", f"/v1/payments/{pay['id']}/transaction_log", auth)
    await call("POST", f"/v1/payments/{pay['id']}/cancel", auth)

    # The pipeline does not run here: later states are set on the rows directly.
    held = await make_payment(client, auth, capture=False)
    sold = await make_payment(client, auth)
    async with runtime.db.transaction() as conn:
        await conn.execute(
            payments.update()
            .where(payments.c.id == held)
            .values(status="requires_capture", amount_capturable=payments.c.amount)
        )
        await conn.execute(
            payments.update()
            .where(payments.c.id == sold)
            .values(status="succeeded", amount_captured=payments.c.amount)
        )
    await call("POST", f"/v1/payments/{held}/capture", auth, json={"amount": 1000})
    refund = await call("POST", "/v1/refunds", {**auth, **idem()}, json={"payment": sold})
    await call("GET", f"/v1/refunds/{refund.json()['id']}", auth)
    await call("GET", "/v1/refunds", auth)
    await call("GET", f"/v1/refunds?payment={sold}", auth)

    # Errors too: a validation error, a missing object, a state conflict, no key.
    await call("POST", "/v1/payments", {**auth, **idem()}, json={"currency": "usd"})
    await call("GET", "/v1/payments/pay_missing", auth)
    await call("POST", f"/v1/payments/{pay['id']}/cancel", auth)
    await call("GET", "/v1/payments", {})
    statuses = [r.status_code for r in seen]
    assert statuses[-4:] == [400, 404, 409, 401]
    async with runtime.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(payments)) == 3


# The operational endpoints.


async def test_docs_answers_html(sqlite_client: httpx.AsyncClient) -> None:
    r = await sqlite_client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in r.text
    assert "swagger-ui" in r.text.lower()


async def test_healthz(sqlite_client: httpx.AsyncClient, doc: dict[str, Any]) -> None:
    r = await sqlite_client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert_conforms(doc, r)


async def test_readyz_names_each_backend(client: httpx.AsyncClient, database_url: str) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    assert r.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True, "backend": backend},
            "bus": {"ok": True, "backend": "local"},
            "cache": {"ok": True, "backend": "memory"},
        },
    }
    assert_conforms(doc=(await client.get("/openapi.json")).json(), r=r)


async def test_readyz_answers_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    # Port 9 (discard) on the loopback: nothing listens, the connection is refused at once.
    settings = make_settings(tmp_path, "postgresql+asyncpg://paygate:x@127.0.0.1:9/paygate")
    runtime = Runtime.from_settings(settings)
    app = create_app(settings, runtime)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://paygate.test") as c:
            r = await c.get("/readyz")
            doc = (await c.get("/openapi.json")).json()
    finally:
        await runtime.close()
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"] == {"ok": False, "backend": "postgresql"}
    assert_conforms(doc, r)
