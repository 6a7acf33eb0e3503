"""Bad input gets a clear error and changes nothing (DESIGN.md section 4, Errors), on both
databases: a 4xx with the contract body `{"error": {"type", "code", "message", "param"}}` naming
the field, never a 500, never a half-written payment; and no error ever repeats card data."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate import money
from paygate.config import Settings
from paygate.platform.db.tables import (
    customers,
    outbox,
    payment_methods,
    payments,
    refunds,
    transaction_log,
    vault_cards,
    vault_cvcs,
)
from paygate.runtime import Runtime
from paygate.vault.cards import luhn_valid
from tests.conftest import make_settings
from tests.support import ADMIN_KEY, idem, payment_body

ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "idempotency_error",
    "rate_limit_error",
    "card_error",
}
# Every table a payment, a refund or a customer writes to.
EFFECTS = (
    payments,
    payment_methods,
    vault_cards,
    vault_cvcs,
    transaction_log,
    outbox,
    customers,
    refunds,
)
CARD = "payment_method.card"


def luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it Luhn-valid."""
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def luhn_broken(number: str) -> str:
    """`number` with its last digit changed so that the Luhn check fails."""
    return next(
        number[:-1] + d
        for d in "0123456789"
        if not luhn_valid(re.sub(r"[ -]", "", number[:-1] + d))
    )


def contract_error(r: httpx.Response, status: int) -> dict[str, Any]:
    """The error of a refused request, checked against the contract's shape."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"], body
    error: dict[str, Any] = body["error"]
    assert sorted(error) == ["code", "message", "param", "type"], error
    assert error["type"] in ERROR_TYPES, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    return error


async def effect_rows(runtime: Runtime) -> dict[str, int]:
    async with runtime.db.read() as conn:
        return {
            t.name: int(await conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0)
            for t in EFFECTS
        }


@dataclass
class Api:
    client: httpx.AsyncClient
    auth: dict[str, str]
    runtime: Runtime
    settings: Settings

    async def create(self, body: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth, **idem(), **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["json"] = body
        return await self.client.post("/v1/payments", headers=headers, **kwargs)

    async def refused(
        self, body: Any = None, *, status: int = 400, path: str = "/v1/payments", **kwargs: Any
    ) -> dict[str, Any]:
        """POST a request that must be refused; check the error and that nothing was written."""
        before = await effect_rows(self.runtime)
        headers = {**self.auth, **idem(), **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["json"] = body
        r = await self.client.post(path, headers=headers, **kwargs)
        error = contract_error(r, status)
        assert await effect_rows(self.runtime) == before, (body, error)
        return error


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # Hundreds of requests a second from one key: what is tested here is validation, not the
    # rate limits, which would otherwise answer some of them with a 429 first.
    return make_settings(tmp_path, database_url, default_tier="unlimited")


@pytest.fixture
def api(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, settings: Settings
) -> Api:
    return Api(client, auth, runtime, settings)


def names_param(error: dict[str, Any], param: str) -> None:
    assert error["param"] == param, error
    assert param in error["message"] or error["code"] == "invalid_expiry", error


# --- amounts ------------------------------------------------------------------------------------

AMOUNTS_REFUSED: list[tuple[Any, str]] = [
    (True, "parameter_invalid"),
    (False, "parameter_invalid"),
    (19.5, "parameter_invalid"),
    (20.0, "parameter_invalid"),
    ("1999", "parameter_invalid"),
    (None, "parameter_invalid"),
    ([1999], "parameter_invalid"),
    ({"value": 1999}, "parameter_invalid"),
    (0, "invalid_amount"),
    (-1, "invalid_amount"),
    (-1999, "invalid_amount"),
    (money.MAX_AMOUNT + 1, "invalid_amount"),
    (2**64, "invalid_amount"),
]


async def test_amount_of_wrong_type_or_range_is_refused(api: Api) -> None:
    for value, code in AMOUNTS_REFUSED:
        error = await api.refused(payment_body(amount=value))
        names_param(error, "amount")
        assert (error["type"], error["code"]) == ("invalid_request_error", code), value
    # JSON spellings of a float that equals an integer are still floats.
    for raw in ("2e3", "1999.0", "1.999e3"):
        content = json.dumps(payment_body(amount=0)).replace('"amount": 0', f'"amount": {raw}')
        error = await api.refused(content=content, headers={"Content-Type": "application/json"})
        names_param(error, "amount")


async def test_amount_bounds_are_accepted(api: Api) -> None:
    for amount in (1, money.MAX_AMOUNT):
        r = await api.create(payment_body(amount=amount))
        assert r.status_code == 202, r.text
        assert r.json()["amount"] == amount


# --- currencies ---------------------------------------------------------------------------------

CURRENCIES_REFUSED: list[tuple[Any, str]] = [
    ("usx", "invalid_currency"),  # not a currency
    ("us", "invalid_currency"),  # not a code
    ("usdd", "invalid_currency"),
    ("", "invalid_currency"),
    ("usd ", "invalid_currency"),
    ("u$d", "invalid_currency"),
    ("xau", "invalid_currency"),  # gold: no minor unit
    ("xdr", "invalid_currency"),  # special drawing rights: no minor unit
    ("xxx", "invalid_currency"),  # "no currency"
    (840, "parameter_invalid"),
    (None, "parameter_invalid"),
    (["usd"], "parameter_invalid"),
]


async def test_currency_that_is_not_a_payable_iso_4217_code_is_refused(api: Api) -> None:
    for value, code in CURRENCIES_REFUSED:
        error = await api.refused(payment_body(currency=value))
        names_param(error, "currency")
        assert error["code"] == code, value


async def test_currency_is_case_insensitive_and_any_exponent_is_accepted(api: Api) -> None:
    # USD has 2 minor digits, JPY none, KWD 3 (ISO 4217): all are amounts in the minor unit.
    for given, stored, amount in (
        ("USD", "usd", 1999),
        ("Usd", "usd", 5),
        ("jpy", "jpy", 500),
        ("kwd", "kwd", 1500),
    ):
        r = await api.create(payment_body(currency=given, amount=amount))
        assert r.status_code == 202, r.text
        assert (r.json()["currency"], r.json()["amount"]) == (stored, amount)
        got = await api.client.get(f"/v1/payments/{r.json()['id']}", headers=api.auth)
        assert got.json()["currency"] == stored


# --- the card -----------------------------------------------------------------------------------

NUMBERS_REFUSED: list[tuple[Any, str]] = [
    ("4242424242424241", "invalid_number"),  # Luhn check fails
    ("4242 4242 4242 4241", "invalid_number"),
    ("4242abcd42424242", "invalid_number"),  # letters
    ("4242-4242-4242-424x", "invalid_number"),
    ("", "invalid_number"),
    ("4242424242", "invalid_number"),  # too short
    (luhn_complete("4242424242"), "invalid_number"),  # 11 digits, Luhn-valid: still too short
    (luhn_complete("4" * 19), "invalid_number"),  # 20 digits, Luhn-valid: too long
    ("\uff14\uff12" * 8, "invalid_number"),  # full-width digits
    ("4" * 41, "parameter_invalid"),  # past the field's length
    (4242424242424242, "parameter_invalid"),  # a JSON number
    (None, "parameter_invalid"),
]


async def test_card_number_that_is_not_a_card_number_is_refused(api: Api) -> None:
    for value, code in NUMBERS_REFUSED:
        error = await api.refused(payment_body(card={"number": value}))
        names_param(error, f"{CARD}.number")
        assert error["code"] == code, value


async def test_card_number_in_printed_forms_is_accepted(api: Api) -> None:
    for number, last4, brand in (
        ("4242 4242 4242 4242", "4242", "visa"),
        ("5555-5555-5555-4444", "4444", "mastercard"),
        ("378282246310005", "0005", "amex"),
    ):
        r = await api.create(payment_body(card={"number": number, "cvc": "1234"}))
        assert r.status_code == 202, r.text
        card = r.json()["payment_method"]["card"]
        assert (card["last4"], card["brand"]) == (last4, brand)


def months_ago(n: int) -> tuple[int, int]:
    today = dt.datetime.now(dt.UTC).date()
    index = today.year * 12 + today.month - 1 - n
    return index % 12 + 1, index // 12


async def test_expired_card_is_refused(api: Api) -> None:
    for month, year in ((12, 2020), months_ago(1), months_ago(13)):
        error = await api.refused(payment_body(card={"exp_month": month, "exp_year": year}))
        assert error["code"] == "invalid_expiry", (month, year)
        # The expiry is the pair (month, year): the card or either of its fields is named.
        assert error["param"] in (CARD, f"{CARD}.exp_year", f"{CARD}.exp_month"), error
    # A card is good through the last day of its expiry month.
    month, year = months_ago(0)
    r = await api.create(payment_body(card={"exp_month": month, "exp_year": year}))
    assert r.status_code == 202, r.text


EXPIRY_REFUSED: list[tuple[str, Any]] = [
    ("exp_month", 13),
    ("exp_month", 0),
    ("exp_month", -1),
    ("exp_month", "12"),
    ("exp_month", 12.0),
    ("exp_month", None),
    ("exp_year", "2030"),
    ("exp_year", 30),
    ("exp_year", 1999),
    ("exp_year", 2101),
    ("exp_year", True),
]


async def test_expiry_fields_of_wrong_type_or_range_are_refused(api: Api) -> None:
    for field, value in EXPIRY_REFUSED:
        error = await api.refused(payment_body(card={field: value}))
        names_param(error, f"{CARD}.{field}")
        assert error["code"] == "parameter_invalid", (field, value)


CVCS_REFUSED: list[tuple[Any, str]] = [
    ("12", "invalid_cvc"),
    ("12345", "invalid_cvc"),
    ("abc", "invalid_cvc"),
    ("12a", "invalid_cvc"),
    ("", "invalid_cvc"),
    (" 123", "invalid_cvc"),
    ("\u0661\u0662\u0663", "invalid_cvc"),  # Arabic-Indic digits
    ("123456789", "parameter_invalid"),  # past the field's length
    (123, "parameter_invalid"),  # a JSON number
    (None, "parameter_invalid"),
]


async def test_cvc_that_is_not_3_or_4_digits_is_refused(api: Api) -> None:
    for value, code in CVCS_REFUSED:
        error = await api.refused(payment_body(card={"cvc": value}))
        names_param(error, f"{CARD}.cvc")
        assert error["code"] == code, value


# --- metadata -----------------------------------------------------------------------------------

METADATA_REFUSED: list[tuple[Any, str]] = [
    ({f"k{i}": "v" for i in range(51)}, "invalid_metadata"),
    ({"k" * 41: "v"}, "invalid_metadata"),
    ({"": "v"}, "invalid_metadata"),
    ({"k": "v" * 501}, "invalid_metadata"),
    ({"k": 1}, "parameter_invalid"),
    ({"k": None}, "parameter_invalid"),
    ({"k": True}, "parameter_invalid"),
    ({"k": {"a": "b"}}, "parameter_invalid"),
    ({"k": ["v"]}, "parameter_invalid"),
    ("order_id=1", "parameter_invalid"),
    ([["k", "v"]], "parameter_invalid"),
]


async def test_metadata_past_its_limits_or_not_strings_is_refused(api: Api) -> None:
    for value, code in METADATA_REFUSED:
        error = await api.refused(payment_body(metadata=value))
        assert error["param"] is not None and error["param"].startswith("metadata"), error
        assert error["code"] == code, value


async def test_metadata_at_its_limits_is_accepted(api: Api) -> None:
    metadata = {f"{i:02d}".ljust(40, "k"): "v" * 500 for i in range(50)}
    r = await api.create(payment_body(metadata=metadata))
    assert r.status_code == 202, r.text
    assert r.json()["metadata"] == metadata


# --- unknown and missing fields ----------------------------------------------------------------


def without(path: str) -> dict[str, Any]:
    body = payment_body()
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[part]
    del node[last]
    return body


async def test_unknown_fields_are_refused_by_name(api: Api) -> None:
    base = payment_body()
    for body, param in (
        ({**base, "amout": 1999}, "amout"),
        (payment_body(card={"cvv": "123"}), f"{CARD}.cvv"),
        ({**base, "payment_method": {**base["payment_method"], "bank": {}}}, "payment_method.bank"),
        (payment_body(customer={"email": "a@example.com", "phone": "1"}), "customer.phone"),
    ):
        error = await api.refused(body)
        assert error["code"] == "parameter_unknown", error
        names_param(error, param)


async def test_missing_required_fields_are_named(api: Api) -> None:
    for path in (
        "amount",
        "currency",
        "payment_method",
        "payment_method.card",
        *(f"{CARD}.{f}" for f in ("number", "exp_month", "exp_year", "cvc")),
    ):
        error = await api.refused(without(path))
        assert error["code"] == "parameter_missing", error
        names_param(error, path)


async def test_malformed_bodies_are_refused(api: Api) -> None:
    json_type = {"Content-Type": "application/json"}
    for content in (
        b"{",
        b'{"amount": 1999,}',
        b"{'amount': 1999}",
        b"[]",
        b"[1999]",
        b'"payment"',
        b"1999",
        b"",
        b"null",
        b"\xff\xfe{}",  # not UTF-8
        b'{"amount": NaN}',
        b"[" * 5000 + b"]" * 5000,  # nested deeper than the parser recurses
    ):
        error = await api.refused(content=content, headers=json_type)
        assert error["type"] == "invalid_request_error", (content, error)
        assert "None" not in error["message"], error
    # A valid payment sent as some other media type is no JSON request.
    error = await api.refused(
        content=json.dumps(payment_body()), headers={"Content-Type": "text/plain"}
    )
    assert error["type"] == "invalid_request_error"


async def test_a_refused_request_is_not_recorded_under_its_idempotency_key(api: Api) -> None:
    key = idem()
    await api.refused(payment_body(amount="1999"), headers=key)
    # The key is still free: the corrected request runs (not a 422 "different request").
    r = await api.create(payment_body(), headers=key)
    assert r.status_code == 202, r.text


async def test_idempotency_key_is_required_and_checked(api: Api) -> None:
    error = await api.refused(payment_body(), headers={"Idempotency-Key": ""})
    assert error["param"] == "Idempotency-Key"
    r = await api.client.post("/v1/payments", json=payment_body(), headers=api.auth)
    assert contract_error(r, 400)["param"] == "Idempotency-Key"
    for key in ("k" * 256, "tab\tkey"):
        error = await api.refused(payment_body(), headers={"Idempotency-Key": key})
        assert error["param"] == "Idempotency-Key", key


# --- the body cap -------------------------------------------------------------------------------


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with spaces (still valid JSON) to exactly `size` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_body_over_the_cap_is_413_with_or_without_content_length(api: Api) -> None:
    cap = api.settings.max_body_bytes
    assert cap == 64 * 1024
    json_type = {"Content-Type": "application/json"}
    at_cap = padded(payment_body(), cap)
    r = await api.create(content=at_cap, headers=json_type)
    assert r.status_code == 202, r.text

    over = padded(payment_body(), cap + 1)
    for path in ("/v1/payments", "/v1/refunds", "/v1/customers"):
        error = await api.refused(content=over, headers=json_type, status=413, path=path)
        assert (error["type"], error["code"]) == ("invalid_request_error", "body_too_large")
        # No Content-Length: the body arrives in chunks and is counted while it is read.
        error = await api.refused(content=chunks(over), headers=json_type, status=413, path=path)
        assert error["code"] == "body_too_large"
    # A Content-Length that is not a number is no way around the cap either.
    error = await api.refused(
        content=at_cap, headers={**json_type, "Content-Length": "64k"}, status=413
    )
    assert error["code"] == "body_too_large"
    # A chunked body under the cap is read as usual.
    r = await api.create(content=chunks(json.dumps(payment_body()).encode(), 16), headers=json_type)
    assert r.status_code == 202, r.text


# --- query strings and ids ----------------------------------------------------------------------


async def test_query_parameters_of_wrong_type_are_refused_by_name(api: Api) -> None:
    for path in ("/v1/payments", "/v1/refunds", "/v1/customers"):
        for limit in ("0", "101", "abc", "-1", "1.5", "", "1e2"):
            r = await api.client.get(path, params={"limit": limit}, headers=api.auth)
            names_param(contract_error(r, 400), "limit")
        for limit in ("1", "100"):
            r = await api.client.get(path, params={"limit": limit}, headers=api.auth)
            assert r.status_code == 200, r.text
        r = await api.client.get(path, params={"starting_after": "x" * 41}, headers=api.auth)
        names_param(contract_error(r, 400), "starting_after")
    for name, value in (
        ("created[gt]", "abc"),
        ("created[gte]", "-1"),
        ("created[lt]", "1" * 30),
        ("created[lte]", "9223372036854775808"),
        ("status", "paid"),
        ("customer", "c" * 41),
    ):
        r = await api.client.get("/v1/payments", params={name: value}, headers=api.auth)
        names_param(contract_error(r, 400), name)


async def test_nul_characters_are_refused_on_both_databases(api: Api) -> None:
    # PostgreSQL text cannot hold U+0000; SQLite can. Both must answer the same 400.
    for body, param in (
        (payment_body(description="a\x00b"), "description"),
        (payment_body(metadata={"k": "v\x00"}), "metadata"),
        (payment_body(metadata={"k\x00": "v"}), "metadata"),
        (payment_body(customer={"name": "\x00"}), "customer.name"),
        (payment_body(customer={"id": "cus_\x00"}), "customer.id"),
    ):
        error = await api.refused(body)
        assert error["param"] == param, error
    error = await api.refused({"payment": "pay_\x00"}, path="/v1/refunds")
    assert error["param"] == "payment"
    for path, param in (
        ("/v1/payments?customer=%00", "customer"),
        ("/v1/payments?starting_after=pay_%00", "starting_after"),
        ("/v1/refunds?payment=%00", "payment"),
        ("/v1/customers?email=a%00", "email"),
        ("/v1/payments/pay_%00", None),
        ("/v1/refunds/re_%00", None),
        ("/v1/customers/%00", None),
        ("/v1/payments/%00/transaction_log", None),
    ):
        r = await api.client.get(path, headers=api.auth)
        assert contract_error(r, 400)["param"] == param, path
    error = await api.refused(path="/v1/payments/pay_%00/cancel")
    assert error["param"] is None


# --- refunds ------------------------------------------------------------------------------------


async def test_refund_requests_are_validated_and_write_nothing(api: Api) -> None:
    created = await api.create(payment_body())
    payment = created.json()["id"]
    refusals: list[tuple[dict[str, Any], str, str]] = [
        *(
            ({"payment": payment, "amount": v}, "amount", "parameter_invalid")
            for v in ("10", 10.5, 10.0, True, [10])
        ),
        *(
            ({"payment": payment, "amount": v}, "amount", "invalid_amount")
            for v in (0, -5, money.MAX_AMOUNT + 1)
        ),
        *(
            ({"payment": payment, "reason": v}, "reason", "parameter_invalid")
            for v in ("nope", "", "Duplicate", 1)
        ),
        ({}, "payment", "parameter_missing"),
        ({"amount": 100}, "payment", "parameter_missing"),
        ({"payment": 123}, "payment", "parameter_invalid"),
        ({"payment": None}, "payment", "parameter_invalid"),
        ({"payment": "p" * 41}, "payment", "parameter_invalid"),
        ({"payment": payment, "metadata": {"k": 1}}, "metadata.k", "parameter_invalid"),
        ({"payment": payment, "note": "x"}, "note", "parameter_unknown"),
    ]
    for body, param, code in refusals:
        error = await api.refused(body, path="/v1/refunds")
        names_param(error, param)
        assert error["code"] == code, body
    error = await api.refused({"payment": "pay_nope"}, path="/v1/refunds", status=404)
    assert (error["code"], error["param"]) == ("resource_missing", "payment")
    r = await api.client.post("/v1/refunds", json={"payment": payment}, headers=api.auth)
    assert contract_error(r, 400)["param"] == "Idempotency-Key"
    after = (await api.client.get(f"/v1/payments/{payment}", headers=api.auth)).json()
    assert after == created.json()


async def test_capture_and_cancel_bodies_are_validated(api: Api) -> None:
    payment = (await api.create(payment_body())).json()["id"]
    for path, body, param in (
        (f"/v1/payments/{payment}/capture", {"amount": "100"}, "amount"),
        (f"/v1/payments/{payment}/capture", {"amount": 0}, "amount"),
        (f"/v1/payments/{payment}/capture", {"amount": 1, "final": True}, "final"),
        (f"/v1/payments/{payment}/cancel", {"cancellation_reason": "bored"}, "cancellation_reason"),
        (f"/v1/payments/{payment}/cancel", {"reason": "duplicate"}, "reason"),
    ):
        names_param(await api.refused(body, path=path), param)
    got = await api.client.get(f"/v1/payments/{payment}", headers=api.auth)
    assert got.json()["status"] == "pending"


# --- authentication and permissions ------------------------------------------------------------


async def test_every_credential_failure_has_the_contract_error_type(
    api: Api, merchant: dict[str, Any]
) -> None:
    client = api.client
    body = payment_body()
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Basic c2tfdGVzdDo="},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": "Token " + merchant["api_key"]},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer sk_test_" + "0" * 32},
        {"Authorization": "Bearer " + merchant["api_key"] + "x"},
        {"Authorization": "Bearer " + ADMIN_KEY + "x"},
    ):
        r = await client.post("/v1/payments", json=body, headers={**headers, **idem()})
        assert contract_error(r, 401)["type"] == "authentication_error", headers
        r = await client.get("/v1/payments", headers=headers)
        assert contract_error(r, 401)["type"] == "authentication_error", headers
    # Who is asking comes before what is asked: no key and a bad body is still a 401.
    r = await client.post("/v1/payments", json=payment_body(amount="x"), headers=idem())
    contract_error(r, 401)

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    publishable = {"Authorization": f"Bearer {merchant['publishable_key']}"}
    for headers in (admin, publishable):
        for method, path in (
            ("POST", "/v1/payments"),
            ("GET", "/v1/payments"),
            ("POST", "/v1/refunds"),
            ("GET", "/v1/customers"),
        ):
            r = await client.request(
                method, path, json=body if method == "POST" else None, headers={**headers, **idem()}
            )
            assert contract_error(r, 403)["type"] == "permission_error", (headers, path)
    for headers in (api.auth, publishable):
        r = await client.post("/v1/merchants", json={"name": "Mallory"}, headers=headers)
        assert contract_error(r, 403)["type"] == "permission_error"
        r = await client.get("/v1/merchants", headers=headers)
        assert contract_error(r, 403)["type"] == "permission_error"
        r = await client.get(f"/v1/merchants/{merchant['id']}", headers=headers)
        assert contract_error(r, 403)["type"] == "permission_error"
    assert set((await effect_rows(api.runtime)).values()) == {0}
    listed = (await client.get("/v1/merchants", headers=admin)).json()
    assert [m["id"] for m in listed["data"]] == [merchant["id"]]


# --- no echo of card data -----------------------------------------------------------------------

CVC = "7351"
NUMBERS = [
    "4242424242424242",
    "5555555555554444",
    "378282246310005",
    "4000000000000002",
    "4242424242424241",  # Luhn-invalid: still card data
    luhn_complete("6011000990139424"[:-1] + "000"),  # 19 digits
]


def forms(number: str) -> list[str]:
    """The number as digits, and grouped by fours with spaces and with dashes."""
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return [number, " ".join(groups), "-".join(groups)]


def requests_carrying(number: str) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body) of refused or harmless requests that carry `number` and the CVC
    in every kind of place."""
    n = int(number)
    card = {"number": number, "cvc": CVC}
    out: list[tuple[str, str, Any]] = []
    for f in forms(number):
        out += [
            ("POST", "/v1/payments", payment_body(amount=0, card={"number": f, "cvc": CVC})),
            ("POST", "/v1/payments", payment_body(card={"number": luhn_broken(f), "cvc": CVC})),
            ("POST", "/v1/payments", payment_body(card={"number": f + "0" * 30})),
            ("POST", "/v1/payments", payment_body(amount=f)),
            ("POST", "/v1/payments", payment_body(currency=f, card=card)),
            ("POST", "/v1/payments", payment_body(amount="x", description=f"{f} {CVC}")),
            ("POST", "/v1/payments", payment_body(description=f * 100, card=card)),
            ("POST", "/v1/payments", payment_body(metadata={"card": f + "x" * 500})),
            ("POST", "/v1/payments", payment_body(metadata={f: 1}, card=card)),
            ("POST", "/v1/payments", payment_body(metadata={f: f}, amount=-1)),
            ("POST", "/v1/payments", payment_body(card={"cvc": f})),
            ("POST", "/v1/payments", payment_body(card={"exp_month": f, "cvc": CVC})),
            ("POST", "/v1/payments", payment_body(customer={"email": f}, card=card)),
            ("POST", "/v1/payments", payment_body(customer={"id": f}, card=card)),
            ("POST", "/v1/payments", payment_body(capture=f, card=card)),
            ("POST", "/v1/payments", {**payment_body(card=card), "card_number": f}),
            ("POST", "/v1/payments", {**payment_body(card=card), f: CVC}),
            ("POST", "/v1/payments", payment_body(card={**card, "pan": f})),
            ("POST", "/v1/payments", payment_body(card={**card, f: CVC})),
            ("POST", "/v1/payments", {**payment_body(), "payment_method": f}),
            ("POST", "/v1/payments", {**payment_body(), "payment_method": {"card": f}}),
            ("POST", "/v1/refunds", {"payment": f}),
            ("POST", "/v1/refunds", {"payment": "pay_x", "amount": f, "reason": f}),
            ("POST", "/v1/refunds", {"payment": "pay_x", "metadata": {"pan": [f, CVC]}}),
            ("POST", "/v1/customers", {"email": f, "name": f * 20}),
            ("GET", f"/v1/payments/{f}", None),
            ("GET", f"/v1/payments?customer={f}&limit={f}", None),
            ("GET", f"/v1/payments?created[gt]={f}&status={f}", None),
            ("POST", f"/v1/payments/{f}/capture", {"amount": f}),
            ("POST", f"/v1/payments/{f}/cancel", {"cancellation_reason": f}),
        ]
    out += [
        ("POST", "/v1/payments", payment_body(amount=n, card=card)),
        ("POST", "/v1/payments", payment_body(card={"number": n, "cvc": CVC})),
        ("POST", "/v1/payments", payment_body(card={"number": number, "cvc": int(CVC)})),
        ("POST", "/v1/payments", payment_body(card={"number": number, "cvc": CVC + "0"})),
        ("POST", "/v1/payments", payment_body(card={"number": number, "cvc": "x" + CVC})),
        ("POST", "/v1/payments", payment_body(card={"exp_year": n, "cvc": CVC})),
        ("POST", "/v1/payments", payment_body(description=n, metadata={"cvc": CVC})),
        ("POST", "/v1/payments", payment_body(metadata={"card": n}, card=card)),
        ("POST", "/v1/payments", payment_body(customer={"name": n}, card=card)),
    ]
    return out


def shows_card_data(text: str, number: str) -> bool:
    flat = re.sub(r"[\s-]", "", text)
    cvc_token = re.search(rf"(?<![0-9A-Za-z]){CVC}(?![0-9A-Za-z])", text)
    # All but the last digit: a Luhn-broken copy of the number is card data too.
    return number[:-1] in flat or any(f in text for f in forms(number)) or cvc_token is not None


async def test_errors_never_echo_a_card_number_or_cvc(api: Api) -> None:
    for number in NUMBERS:
        for method, path, body in requests_carrying(number):
            sent = json.dumps(body) + path
            assert number[:-1] in re.sub(r"[\s-]", "", sent)  # the request does carry it
            r = await api.client.request(method, path, json=body, headers={**api.auth, **idem()})
            assert r.status_code < 500, (path, body, r.text)
            if method == "POST":
                contract_error(r, r.status_code)
                assert 400 <= r.status_code < 500, (path, body, r.text)
            assert not shows_card_data(r.text, number), (path, body, r.text)
    # The card number as an Idempotency-Key, as an admin looking up a merchant, and in a body
    # that is not even JSON.
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for number in NUMBERS:
        for f in forms(number):
            r = await api.client.get(f"/v1/merchants/{f}", headers=admin)
            assert not shows_card_data(contract_error(r, 404)["message"] + r.text, number)
        r = await api.client.post(
            "/v1/payments",
            json=payment_body(amount="x"),
            headers={**api.auth, "Idempotency-Key": number},
        )
        assert not shows_card_data(contract_error(r, 400)["message"] + r.text, number)
        raw = f'{{"payment_method": {{"card": {{"number": "{number}", "cvc": "{CVC}"'
        r = await api.client.post(
            "/v1/payments",
            content=raw,
            headers={**api.auth, **idem(), "Content-Type": "application/json"},
        )
        assert not shows_card_data(r.text, number), r.text
    assert set((await effect_rows(api.runtime)).values()) == {0}


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("description", {"description": "card 4242 4242 4242 4242 exp 12/30"}),
        ("metadata", {"metadata": {"note": "5555-5555-5555-4444"}}),
        ("metadata", {"metadata": {"4000000000000002": "x"}}),
        ("customer.name", {"customer": {"name": "378282246310005"}}),
    ],
)
async def test_card_numbers_in_free_text_are_refused(
    client: httpx.AsyncClient, auth: dict[str, str], field: str, body: dict[str, Any]
) -> None:
    r = await client.post("/v1/payments", json=payment_body(**body), headers={**auth, **idem()})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "card_number_in_text"
    assert error["param"].startswith(field)
    for number in ("4242", "5555-5555", "4000000000000002", "378282246310005"):
        assert number not in r.text or number == "4242"  # the last four may name the field
    assert "4242 4242 4242 4242" not in r.text


async def test_order_numbers_and_phone_numbers_are_not_card_numbers(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = payment_body(
        description="Order 1234567890123456, call +1 415 555 0100",
        metadata={"order": "9999999999999995"},
    )
    r = await client.post("/v1/payments", json=body, headers={**auth, **idem()})
    assert r.status_code == 202, r.text
