"""Card data never leaks (DESIGN.md section 2, Card data; PCI DSS requirement 3): after real
traffic through the whole gateway (API, pipeline, the bank simulator over HTTP), no card number,
in any printed form, nor any CVC shows in a response, a log line, or a byte the gateway and its
bank leave in the data folder; on PostgreSQL, in no text or binary column of any table."""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.api.app import create_app
from paygate.banksim.app import create_app as create_bank_app
from paygate.banksim.settings import BankSimSettings
from paygate.config import Settings
from paygate.connectors.breaker import CircuitBreaker
from paygate.connectors.http import HttpBankConnector, RetryPolicy
from paygate.pipeline import Pipeline
from paygate.platform.db.tables import Json, metadata, vault_cards
from paygate.runtime import Runtime
from paygate.vault import repository as vault
from paygate.vault.cards import luhn_valid
from tests.conftest import make_settings, new_merchant
from tests.live import LiveServer
from tests.security.conftest import Logs
from tests.support import ADMIN_KEY, idem, payment_body

BANK_KEY = "bank_sk_security_test"
WAIT = {"Prefer": "wait=10"}


def luhn_complete(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def random_card(rng: random.Random, prefix: str, length: int) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return luhn_complete(prefix + digits)


# Seeded: a random card whose last four digits (stored in plain, as they may be) equalled one of
# the CVCs below would be a false alarm; this seed gives none (checked below).
_rng = random.Random(20261124)
# (number, CVC) of the cards paid with: the published test cards and random Luhn-valid numbers of
# several networks and lengths. CVCs have four digits: a three-digit one could turn up by chance
# in the raw bytes of an encrypted column, four practically never.
CARDS = [
    ("4242424242424242", "7351"),
    ("5555555555554444", "8264"),
    ("4000000000000002", "5938"),  # declined by the bank
    ("378282246310005", "6047"),  # amex
    ("4000000000009235", "3817"),  # sent to review
    (random_card(_rng, "4", 16), "9152"),
    (random_card(_rng, "51", 16), "4726"),
    (random_card(_rng, "6011", 16), "2693"),
    (random_card(_rng, "4", 19), "5384"),
    (random_card(_rng, "36", 14), "6295"),
]
# Sent only in refused requests: they must leave no trace at all.
REFUSED_CARDS = [(random_card(_rng, "4", 16), "8573"), ("4242424242424241", "3069")]
ALL_CARDS = CARDS + REFUSED_CARDS
assert not {n[-4:] for n, _ in ALL_CARDS} & {c for _, c in ALL_CARDS}


def forms(number: str) -> list[str]:
    """The number as digits, and grouped by fours with spaces and with dashes."""
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return [number, " ".join(groups), "-".join(groups)]


# A CVC counts where it stands as a number of its own (in JSON, "7351" or 7351): inside a longer
# run of letters and digits (an id, a timestamp) it is a coincidence, and so it is inside a UUID
# (the requests' idempotency keys), whose groups of four hex digits stand between hyphens.
CVC_TOKEN = re.compile(rf"(?<![0-9A-Za-z])(?:{'|'.join(c for _, c in ALL_CARDS)})(?![0-9A-Za-z])")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def card_data_in(text: str) -> list[str]:
    """Every card number (in any form, or as its digits once separators are dropped) and every
    CVC that `text` holds."""
    flat = re.sub(r"[\s-]", "", text)
    found = [n for n, _ in ALL_CARDS if n in flat or any(f in text for f in forms(n))]
    return found + CVC_TOKEN.findall(UUID.sub("", text))


def test_the_scan_finds_a_cvc_of_its_own_and_not_one_inside_an_id() -> None:
    assert card_data_in('{"cvc": "2693"}') == ["2693"]
    assert card_data_in("the cvc 2693, again") == ["2693"]
    assert card_data_in("bc968586-2693-40fe-888a-a4e5b327d428") == []  # an idempotency key
    assert card_data_in("pay_01M90QF2693KJT") == []
    assert card_data_in("6011 0000 0000 0004") == [] and card_data_in(CARDS[0][0][:12]) == []
    assert card_data_in("4242-4242-4242-4242") == ["4242424242424242"]


@dataclass
class Gateway:
    """The gateway as `paygate serve` runs it: the API, the pipeline, and the bank simulator
    reached over HTTP on a loopback port (`bank` is an in-process client of the same bank, for
    its audit)."""

    client: httpx.AsyncClient
    bank: httpx.AsyncClient
    runtime: Runtime
    pipeline: Pipeline
    data_dir: Path
    responses: list[httpx.Response] = field(default_factory=list)


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    runtime = Runtime.from_settings(settings)
    bank_app = create_bank_app(
        BankSimSettings(data_dir=settings.data_dir, api_key=BANK_KEY, latency_median_ms=0)
    )
    bank = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=bank_app),
        base_url="http://bank.test",
        headers={"Authorization": f"Bearer {BANK_KEY}"},
    )
    bank_server = LiveServer(bank_app)
    connector = HttpBankConnector(
        bank_server.start(),
        BANK_KEY,
        read_timeout=5,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02),
        breaker=CircuitBreaker(failure_threshold=1000, reset_timeout_s=0.1),
    )
    pipeline = Pipeline(runtime, connector)
    responses: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        responses.append(response)

    transport = httpx.ASGITransport(app=create_app(settings, runtime))
    client = httpx.AsyncClient(
        transport=transport, base_url="http://paygate.test", event_hooks={"response": [keep]}
    )
    pipeline.start()
    try:
        yield Gateway(client, bank, runtime, pipeline, settings.data_dir, responses)
    finally:
        await pipeline.stop()
        bank_server.stop()
        await client.aclose()
        await bank.aclose()
        await bank_app.state.bank.aclose()
        await runtime.close()


async def run_traffic(gw: Gateway) -> dict[str, dict[str, Any]]:
    """Payments with every card (in every printed form), replays, captures, refunds, cancels,
    refused requests full of card data, and reads. Returns the accepted payments by number."""
    merchant = await new_merchant(gw.client)
    auth = {"Authorization": f"Bearer {merchant['api_key']}"}
    accepted: dict[str, dict[str, Any]] = {}
    for i, (number, cvc) in enumerate(CARDS):
        body = payment_body(
            amount=1000 + 37 * i,
            card={"number": forms(number)[i % 3], "cvc": cvc},
            capture=i % 3 != 1,
            customer={"email": f"holder{i}@example.com", "name": "Card Holder"},
            description=f"order {i}",
            metadata={"order": str(i)},
        )
        key = idem()
        r = await gw.client.post("/v1/payments", json=body, headers={**auth, **key, **WAIT})
        assert r.status_code in (200, 202), r.text
        replay = await gw.client.post("/v1/payments", json=body, headers={**auth, **key})
        assert replay.content == r.content
        accepted[number] = r.json()

    for p in accepted.values():
        if p["status"] == "requires_capture":
            await gw.client.post(f"/v1/payments/{p['id']}/capture", headers={**auth, **WAIT})
        if p["status"] == "succeeded":
            for _ in range(2):
                await gw.client.post(
                    "/v1/refunds",
                    json={"payment": p["id"], "amount": 300, "reason": "requested_by_customer"},
                    headers={**auth, **idem(), **WAIT},
                )
    for number, cvc in CARDS[:3]:
        r = await gw.client.post(
            "/v1/payments",
            json=payment_body(card={"number": number, "cvc": cvc}, capture=False),
            headers={**auth, **idem()},
        )
        await gw.client.post(
            f"/v1/payments/{r.json()['id']}/cancel",
            json={"cancellation_reason": "requested_by_customer"},
            headers=auth,
        )

    for number, cvc in ALL_CARDS:
        card = {"number": number, "cvc": cvc}
        broken = next(number[:-1] + d for d in "0123456789" if not luhn_valid(number[:-1] + d))
        for body in (
            payment_body(amount=0, card=card),
            payment_body(card={"number": broken, "cvc": cvc}),
            payment_body(card={"number": forms(number)[1], "cvc": cvc + "0"}),
            payment_body(currency="usx", description=f"card {number} cvc {cvc}", card=card),
            payment_body(metadata={"pan": number, "cvc": int(cvc)}, card=card),
            {**payment_body(card=card), "card_number": forms(number)[2]},
            payment_body(amount=number, card=card),
        ):
            r = await gw.client.post("/v1/payments", json=body, headers={**auth, **idem()})
            assert r.status_code == 400, r.text
        raw = f'{{"payment_method": {{"card": {{"number": "{number}", "cvc": "{cvc}"'
        r = await gw.client.post(
            "/v1/payments",
            content=raw,
            headers={**auth, **idem(), "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text

    listed = await gw.client.get("/v1/payments?limit=100", headers=auth)
    for p in listed.json()["data"]:
        await gw.client.get(f"/v1/payments/{p['id']}", headers=auth)
        await gw.client.get(f"/v1/payments/{p['id']}/transaction_log", headers=auth)
    await gw.client.get("/v1/refunds?limit=100", headers=auth)
    await gw.client.get("/v1/customers?limit=100", headers=auth)
    await gw.client.get("/v1/merchants", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    await gw.pipeline.settle()
    return accepted


async def assert_traffic_was_real(gw: Gateway, accepted: dict[str, dict[str, Any]]) -> None:
    """The scans below mean something only if card data was really handled: the bank was
    called with the cards, and the vault holds every accepted number (encrypted)."""
    called = 0
    for p in accepted.values():
        r = await gw.bank.get("/v1/operations", params={"payment": p["id"]})
        called += bool(r.json()["data"])
    assert called >= len(CARDS) // 2, called
    async with gw.runtime.db.read() as conn:
        tokens = (await conn.execute(sa.select(vault_cards.c.token))).scalars().all()
        revealed = {await vault.reveal_card(conn, gw.runtime.keyring, t) for t in tokens}
    assert set(accepted) <= revealed
    assert revealed.isdisjoint(n for n, _ in REFUSED_CARDS)


def scan_files(data_dir: Path) -> dict[str, list[str]]:
    """Card data per file under `data_dir`, read as raw bytes."""
    found = {}
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        found[str(path.relative_to(data_dir))] = card_data_in(path.read_bytes().decode("latin-1"))
    return found


@pytest.fixture
def serve_settings(sqlite_template: Path, tmp_path: Path) -> Settings:
    data = tmp_path / "var"
    data.mkdir()
    shutil.copy(sqlite_template, data / "paygate.db")
    # As `paygate serve` runs: the database, the generated development secrets and the bank's
    # store, all in the one data folder.
    return Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'paygate.db'}",
        admin_key=ADMIN_KEY,
        bank_api_key=BANK_KEY,
        # Traffic as fast as the test can send it: the rate limits are not what is tested here.
        default_tier="unlimited",
    )


async def test_no_card_data_in_responses_logs_or_files(
    serve_settings: Settings, logs: Logs
) -> None:
    logs.start()
    # The gateway runs inside the test: it stops before the log capture does.
    async with gateway(serve_settings) as gw:
        accepted = await run_traffic(gw)
        await assert_traffic_was_real(gw, accepted)
        found = scan_files(gw.data_dir)
    assert {"paygate.db", "paygate.db-wal", "bank.db"} <= set(found), sorted(found)
    assert {name: hits for name, hits in found.items() if hits} == {}

    assert len(gw.responses) > 100
    for r in gw.responses:
        assert card_data_in(r.text) == [], (r.request.method, r.request.url, r.text)

    output = logs.output()
    assert '"event"' in output  # the capture works: the gateway's JSON lines are in it
    assert card_data_in(output) == [], output
    # Not even before redaction: no component hands card data to a logger at all.
    assert logs.raw and card_data_in("\n".join(logs.raw)) == []

    # Closing checkpointed the write-ahead log into the database file: scan what stays behind.
    found = scan_files(gw.data_dir)
    assert "paygate.db" in found
    assert {name: hits for name, hits in found.items() if hits} == {}


def text_columns(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    """Every column that can hold text or bytes, as stored (JSON columns as their raw text)."""
    columns: list[sa.ColumnElement[Any]] = []
    for column in table.columns:
        if isinstance(column.type, Json):
            columns.append(sa.type_coerce(column, sa.Text).label(column.name))
        elif isinstance(column.type, sa.String | sa.Text | sa.LargeBinary):
            columns.append(column)
    return columns


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_no_card_data_in_any_postgresql_column(database_url: str, tmp_path: Path) -> None:
    async with gateway(
        make_settings(tmp_path, database_url, bank_api_key=BANK_KEY, default_tier="unlimited")
    ) as gw:
        accepted = await run_traffic(gw)
        await assert_traffic_was_real(gw, accepted)
        async with gw.runtime.db.read() as conn:
            present = set(
                (
                    await conn.execute(
                        sa.text(
                            "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = 'public' AND table_name != 'alembic_version'"
                        )
                    )
                ).scalars()
            )
            assert present <= set(metadata.tables), present - set(metadata.tables)
            rows_seen = 0
            for table in metadata.sorted_tables:
                columns = text_columns(table)
                if not columns:
                    continue
                for row in (await conn.execute(sa.select(*columns))).all():
                    rows_seen += 1
                    for name, value in row._mapping.items():
                        if value is None:
                            continue
                        text = value.decode("latin-1") if isinstance(value, bytes) else value
                        assert card_data_in(text) == [], (table.name, name, text[:300])
    assert rows_seen > 50
