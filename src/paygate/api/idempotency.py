"""Idempotency keys (DESIGN.md section 2; the IETF Idempotency-Key header draft).

A write that carries `Idempotency-Key` runs as one unit of work:

1. In flight? The scope (merchant, endpoint, key) is claimed in this process, and on PostgreSQL
   with `pg_try_advisory_xact_lock` inside the transaction, so a second request with the same key
   from any process gets `409` at once. Both claims end with the transaction or the process: a
   killed server never leaves a key stuck in flight.
2. Seen before? The stored record replays the first response byte for byte with
   `Idempotent-Replayed: true`, or `422` when the request differs (HMAC fingerprint of the
   canonical request; the raw body holds card data and is never kept).
3. Otherwise the effects run in a savepoint, and the record with the exact response bytes is
   inserted in the same transaction. A refused request (a 4xx raised once execution started)
   rolls its effects back and still records its response, so a retry sees the same answer.

The unit of work is a plain `work(conn)` callable: a group-commit runner can later run many of
them in one database transaction, each in its own savepoint, without changing any endpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api.auth import Principal, runtime
from paygate.api.errors import error_reply
from paygate.api.prefer import Settle
from paygate.api.responses import JSONBytes, encode
from paygate.errors import IdempotencyInFlight, IdempotencyMismatch, InvalidRequest, PaygateError
from paygate.ids import now_s
from paygate.payments.models import TransitionRefused
from paygate.platform.coalesce import Coalescer, Submission
from paygate.platform.db import Database, deferred
from paygate.platform.db.housekeeping import prune_idempotency_records as prune
from paygate.platform.db.tables import idempotency_keys as records
from paygate.platform.faults import crash_point
from paygate.runtime import Runtime

Reply = tuple[int, Any]
Work = Callable[[AsyncConnection], Awaitable[Reply]]

__all__ = ["execute", "prune"]

MAX_KEY_LENGTH = 255

# A record's statements, built once (docs/performance.md): matched by its scope, their values
# passed with each call.
_SCOPE = sa.and_(
    records.c.merchant_id == sa.bindparam("match_merchant"),
    records.c.endpoint == sa.bindparam("match_endpoint"),
    records.c.key == sa.bindparam("match_key"),
)
_FIND = sa.select(records).where(_SCOPE)
_LOCK = sa.select(sa.func.pg_try_advisory_xact_lock(sa.bindparam("lock_id", type_=sa.BigInteger)))
_FORGET = records.delete().where(_SCOPE)
_SETTLE = records.update().where(_SCOPE)


def _key(request: Request, required: bool) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        if required:
            raise InvalidRequest(
                "This endpoint requires an Idempotency-Key header (a unique value per operation, "
                "such as a UUID), so that a retry never repeats it.",
                param="Idempotency-Key",
                code="idempotency_key_missing",
            )
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"The Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.",
            param="Idempotency-Key",
        )
    return key


def _canonical(raw: bytes) -> bytes:
    # Parsed as the framework parsed it (the standard library's json, which Starlette uses): a
    # body the endpoint accepted, such as one that starts with a UTF-8 byte order mark, must not
    # fail here with a 500 (orjson refuses the mark).
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


async def _fingerprint(request: Request, secret: bytes) -> str:
    raw = await request.body()
    canonical = _canonical(raw) if raw else b""
    query = "&".join(sorted(request.url.query.split("&"))) if request.url.query else ""
    message = b"\n".join(
        [request.method.encode(), request.url.path.encode(), query.encode(), canonical]
    )
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _lock_id(scope: tuple[str, str, str]) -> int:
    digest = hashlib.blake2b("\x1f".join(scope).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def execute(
    request: Request,
    principal: Principal,
    work: Work,
    *,
    required: bool = False,
    settle: Settle | None = None,
    deferring: bool = False,
) -> Response:
    """Run `work` as the request's unit of work, under its idempotency key when one is sent.

    `settle` runs after the commit (`Prefer: wait`); when it changes the answer, the record is
    updated before the answer is sent, so a replay repeats what the caller received.

    `deferring`: `work` runs whole inside a `deferred` block of its own (it reads back none of
    the rows it defers): the record then joins its rows, and on PostgreSQL the work's inserts
    and the record go in one statement, a round trip less. A work that fails drops its
    deferred rows with the rest of its savepoint."""
    rt = runtime(request)
    key = _key(request, required)
    if key is None:
        async with rt.db.transaction(urgent=True) as conn:
            status, body = await work(conn)
        rt.changed()
        settled = await settle(status, body) if settle else None
        if settled is not None:
            status, body, headers = settled
            return JSONBytes(encode(body), status_code=status, headers=headers)
        return JSONBytes(encode(body), status_code=status)

    mode = "admin" if principal.kind == "admin" else ("live" if principal.livemode else "test")
    scope = (principal.merchant_id or "admin", f"{mode} {request.method} {request.url.path}", key)
    aad = "\x1f".join(scope).encode()
    match = {"match_merchant": scope[0], "match_endpoint": scope[1], "match_key": scope[2]}
    fingerprint = await _fingerprint(request, rt.hmac_key)
    if scope in rt.inflight:
        raise _in_flight()
    rt.inflight.add(scope)
    try:
        async with (
            rt.db.transaction(urgent=True) as conn,
            deferred.deferred(conn) if deferring else contextlib.nullcontext(),
        ):
            if not rt.db.is_sqlite:
                locked = await conn.scalar(_LOCK, {"lock_id": _lock_id(scope)})
                if not locked:
                    raise _in_flight()
            found = (await conn.execute(_FIND, match)).one_or_none()
            if found is not None and found.expires_at > now_s():
                if not hmac.compare_digest(found.fingerprint, fingerprint):
                    raise IdempotencyMismatch(
                        "This Idempotency-Key was used with a different request; "
                        "use a new key for a new request."
                    )
                return JSONBytes(
                    _open(rt, found.body_key_id, bytes(found.response_body), aad),
                    status_code=found.response_status,
                    headers={"Idempotent-Replayed": "true"},
                )
            if found is not None:
                await conn.execute(_FORGET, match)

            try:
                async with rt.db.savepoint(conn):
                    status, body = await work(conn)
            except (PaygateError, TransitionRefused) as exc:
                status, body = error_reply(exc)
            payload = encode(body)
            now = now_s()
            key_id, sealed = rt.keyring.seal(payload, aad)
            await deferred.insert(
                conn,
                records,
                dict(
                    merchant_id=scope[0],
                    endpoint=scope[1],
                    key=scope[2],
                    fingerprint=fingerprint,
                    response_status=status,
                    response_body=sealed,
                    body_key_id=key_id,
                    created=now,
                    expires_at=now + rt.settings.idempotency_ttl_s,
                ),
            )
            crash_point("idempotency.before_commit")
        crash_point("idempotency.after_commit")
        rt.changed()
        settled = await settle(status, body) if settle else None
        if settled is None:
            return JSONBytes(payload, status_code=status)
        status, body, headers = settled
        payload = encode(body)
        key_id, sealed = rt.keyring.seal(payload, aad)
        answer = {"response_status": status, "response_body": sealed, "body_key_id": key_id}
        await _settled(rt.db).submit({**match, **answer})
        return JSONBytes(payload, status_code=status, headers=headers)
    finally:
        rt.inflight.discard(scope)


# The settled answers of each database, written together: those that come while one write is on
# its way go in the next, one statement for all (on PostgreSQL one round trip, atomic).
_settlers: weakref.WeakKeyDictionary[Database, Coalescer[dict[str, Any], None]] = (
    weakref.WeakKeyDictionary()
)


def _settled(db: Database) -> Coalescer[dict[str, Any], None]:
    settler = _settlers.get(db)
    if settler is None:
        database = weakref.ref(db)  # the writer must not keep its own key alive

        async def write(
            batch: list[Submission[dict[str, Any], None]],
        ) -> list[BaseException | None]:
            db = database()
            assert db is not None  # its requests hold it
            async with db.single_write(urgent=True) as conn:
                await conn.execute(_SETTLE, [item.value for item in batch])
            return [None] * len(batch)

        settler = _settlers[db] = Coalescer(
            write, key=lambda v: (v["match_merchant"], v["match_endpoint"], v["match_key"])
        )
    return settler


def _open(rt: Runtime, key_id: str | None, body: bytes, aad: bytes) -> bytes:
    return body if key_id is None else rt.keyring.open(key_id, body, aad)


def _in_flight() -> IdempotencyInFlight:
    return IdempotencyInFlight(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        headers={"Retry-After": "1"},
    )
