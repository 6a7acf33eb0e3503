"""Use cases of fraud rules and lists. Each runs in the caller's transaction and, when it
changes anything, writes the rule's new version, an audit-log entry and a new rule-set revision
with it (paygate.fraud.rules)."""

from __future__ import annotations

import contextlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.edge import audit
from paygate.edge.principal import Principal
from paygate.errors import InvalidRequest, NotFound, StateConflict
from paygate.fraud.attributes import ItemRefused, normalize_item
from paygate.fraud.rules import bump_revision, list_kinds
from paygate.fraud.rules_lang import Node, RuleSyntaxError, parse, unparse
from paygate.fraud.rules_schemas import ItemCreate, ListCreate, RuleCreate, RuleUpdate
from paygate.fraud.rules_tables import (
    fraud_list_items,
    fraud_lists,
    fraud_rule_versions,
    fraud_rules,
)
from paygate.ids import new_id, now_s
from paygate.platform.db.pagination import Page, fetch_page

_RULE_FIELDS = ("action", "expression", "description", "enabled", "deleted")
# Every payment is matched against all of them: a bound keeps screening fast.
MAX_RULES = 200


def render_rule(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fraud_rule",
        "livemode": row["livemode"],
        **{k: row[k] for k in _RULE_FIELDS},
        "version": row["version"],
        "created": row["created"],
        "updated": row["updated"],
    }


def render_version(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fraud_rule_version",
        "rule": row["rule_id"],
        "version": row["version"],
        **{k: row[k] for k in _RULE_FIELDS},
        "actor": row["actor"],
        "created": row["created"],
    }


def render_list(row: Any, item_count: int) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fraud_list",
        "livemode": row["livemode"],
        "name": row["name"],
        "kind": row["kind"],
        "description": row["description"],
        "item_count": item_count,
        "created": row["created"],
    }


def render_item(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fraud_list_item",
        "list": row["list_id"],
        "value": row["value"],
        "created": row["created"],
    }


async def check_expression(
    conn: AsyncConnection, merchant_id: str, livemode: bool, expression: str
) -> Node:
    """The parsed expression, or a `400` naming `expression` with the parser's message."""
    try:
        return parse(expression, await list_kinds(conn, merchant_id, livemode))
    except RuleSyntaxError as exc:
        raise InvalidRequest(
            f"Invalid expression: {exc.message}.", param="expression", code="invalid_expression"
        ) from None


# --- rules ---------------------------------------------------------------------------------


async def create_rule(
    conn: AsyncConnection, actor: Principal, merchant_id: str, livemode: bool, body: RuleCreate
) -> dict[str, Any]:
    node = await check_expression(conn, merchant_id, livemode, body.expression)
    c = fraud_rules.c
    live = await conn.scalar(
        sa.select(sa.func.count()).where(
            c.merchant_id == merchant_id, c.livemode == livemode, c.deleted.is_(False)
        )
    )
    if (live or 0) >= MAX_RULES:
        raise InvalidRequest(
            f"At most {MAX_RULES} rules per mode; delete one first.", code="too_many_rules"
        )
    now = now_s()
    row = {
        "id": new_id("frr"),
        "merchant_id": merchant_id,
        "livemode": livemode,
        "action": body.action,
        "expression": unparse(node),
        "description": body.description,
        "enabled": True,
        "deleted": False,
        "version": 1,
        "created": now,
        "updated": now,
    }
    await conn.execute(fraud_rules.insert(), row)
    await _changed(conn, actor, row, "fraud_rule.created")
    return render_rule(row)


async def _changed(conn: AsyncConnection, actor: Principal, row: dict[str, Any], what: str) -> None:
    await conn.execute(
        fraud_rule_versions.insert(),
        dict(
            id=new_id("frv"),
            rule_id=row["id"],
            version=row["version"],
            **{k: row[k] for k in _RULE_FIELDS},
            actor=actor.key_id or actor.kind,
            created=row["updated"],
        ),
    )
    details = {"version": row["version"], "action": row["action"], "enabled": row["enabled"]}
    await audit.record(
        conn, actor, what, merchant_id=row["merchant_id"], object_id=row["id"], details=details
    )
    await bump_revision(conn, row["merchant_id"], row["livemode"])


async def _load_rule(
    conn: AsyncConnection, merchant_id: str, livemode: bool, rule_id: str, *, lock: bool = False
) -> dict[str, Any]:
    c = fraud_rules.c
    query = sa.select(fraud_rules).where(
        c.id == rule_id, c.merchant_id == merchant_id, c.livemode == livemode
    )
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().one_or_none()
    if row is None:
        raise NotFound("No such fraud rule.", param="id")
    return dict(row)


async def get_rule(
    conn: AsyncConnection, merchant_id: str, livemode: bool, rule_id: str
) -> dict[str, Any]:
    return render_rule(await _load_rule(conn, merchant_id, livemode, rule_id))


async def list_rules(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page
) -> list[dict[str, Any]]:
    c = fraud_rules.c
    query = sa.select(fraud_rules).where(
        c.merchant_id == merchant_id, c.livemode == livemode, c.deleted.is_(False)
    )
    return [render_rule(r) for r in await fetch_page(conn, query, c.id, page)]


async def update_rule(
    conn: AsyncConnection,
    actor: Principal,
    merchant_id: str,
    livemode: bool,
    rule_id: str,
    body: RuleUpdate,
) -> dict[str, Any]:
    row = await _load_rule(conn, merchant_id, livemode, rule_id, lock=True)
    if row["deleted"]:
        raise StateConflict("This fraud rule is deleted; create a new one.")
    new = dict(row)
    if body.expression is not None:
        node = await check_expression(conn, merchant_id, livemode, body.expression)
        new["expression"] = unparse(node)
    for name in ("action", "description", "enabled"):
        value = getattr(body, name)
        if value is not None:
            new[name] = value
    if all(new[k] == row[k] for k in _RULE_FIELDS):
        return render_rule(row)  # nothing changes: no new version
    return await _write_version(conn, actor, row, new, "fraud_rule.updated")


async def _write_version(
    conn: AsyncConnection, actor: Principal, row: dict[str, Any], new: dict[str, Any], what: str
) -> dict[str, Any]:
    new["version"] = row["version"] + 1
    new["updated"] = now_s()
    c = fraud_rules.c
    result = await conn.execute(
        fraud_rules.update()
        .where(c.id == row["id"], c.version == row["version"])
        .values(**{k: new[k] for k in (*_RULE_FIELDS, "version", "updated")})
    )
    if result.rowcount != 1:
        raise StateConflict("The fraud rule changed while this request ran; retry it.")
    await _changed(conn, actor, new, what)
    return render_rule(new)


async def delete_rule(
    conn: AsyncConnection, actor: Principal, merchant_id: str, livemode: bool, rule_id: str
) -> dict[str, Any]:
    """Deleted rules stop matching and leave the list; the rule and its versions are kept."""
    row = await _load_rule(conn, merchant_id, livemode, rule_id, lock=True)
    if not row["deleted"]:
        new = {**row, "deleted": True, "enabled": False}
        await _write_version(conn, actor, row, new, "fraud_rule.deleted")
    return {"id": rule_id, "object": "fraud_rule", "deleted": True}


async def rule_versions(
    conn: AsyncConnection, merchant_id: str, livemode: bool, rule_id: str, page: Page
) -> list[dict[str, Any]]:
    await _load_rule(conn, merchant_id, livemode, rule_id)
    query = sa.select(fraud_rule_versions).where(fraud_rule_versions.c.rule_id == rule_id)
    rows = await fetch_page(conn, query, fraud_rule_versions.c.id, page)
    return [render_version(r) for r in rows]


# --- lists ---------------------------------------------------------------------------------


async def create_list(
    conn: AsyncConnection, actor: Principal, merchant_id: str, livemode: bool, body: ListCreate
) -> dict[str, Any]:
    if body.name in await list_kinds(conn, merchant_id, livemode):
        raise InvalidRequest(
            "A fraud list with this name exists already.", param="name", code="name_taken"
        )
    row: dict[str, Any] = {
        "id": new_id("frl"),
        "merchant_id": merchant_id,
        "livemode": livemode,
        "name": body.name,
        "kind": body.kind,
        "description": body.description,
        "created": now_s(),
    }
    try:
        async with conn.begin_nested():
            await conn.execute(fraud_lists.insert(), row)
    except sa.exc.IntegrityError:  # created by a concurrent request
        raise InvalidRequest(
            "A fraud list with this name exists already.", param="name", code="name_taken"
        ) from None
    await audit.record(
        conn, actor, "fraud_list.created", merchant_id=merchant_id, object_id=row["id"]
    )
    await bump_revision(conn, merchant_id, livemode)
    return render_list(row, 0)


async def _load_list(
    conn: AsyncConnection, merchant_id: str, livemode: bool, list_id: str
) -> sa.RowMapping:
    c = fraud_lists.c
    row = (
        (
            await conn.execute(
                sa.select(fraud_lists).where(
                    c.id == list_id, c.merchant_id == merchant_id, c.livemode == livemode
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound("No such fraud list.", param="id")
    return row


async def _count(conn: AsyncConnection, list_ids: list[str]) -> dict[str, int]:
    if not list_ids:
        return {}
    c = fraud_list_items.c
    rows = await conn.execute(
        sa.select(c.list_id, sa.func.count()).where(c.list_id.in_(list_ids)).group_by(c.list_id)
    )
    return {list_id: n for list_id, n in rows.all()}


async def get_list(
    conn: AsyncConnection, merchant_id: str, livemode: bool, list_id: str
) -> dict[str, Any]:
    row = await _load_list(conn, merchant_id, livemode, list_id)
    return render_list(row, (await _count(conn, [list_id])).get(list_id, 0))


async def list_lists(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page
) -> list[dict[str, Any]]:
    c = fraud_lists.c
    query = sa.select(fraud_lists).where(c.merchant_id == merchant_id, c.livemode == livemode)
    rows = await fetch_page(conn, query, c.id, page)
    counts = await _count(conn, [r["id"] for r in rows])
    return [render_list(r, counts.get(r["id"], 0)) for r in rows]


async def add_item(
    conn: AsyncConnection,
    actor: Principal,
    merchant_id: str,
    livemode: bool,
    list_id: str,
    body: ItemCreate,
) -> tuple[int, dict[str, Any]]:
    """`201` with the new item, or `200` with the item that holds this value already."""
    lst = await _load_list(conn, merchant_id, livemode, list_id)
    try:
        value = normalize_item(lst["kind"], body.value)
    except ItemRefused as exc:
        raise InvalidRequest(str(exc), param="value", code="invalid_list_item") from None
    c = fraud_list_items.c
    same = sa.select(fraud_list_items).where(c.list_id == list_id, c.value == value)
    found = (await conn.execute(same)).mappings().one_or_none()
    if found is not None:
        return 200, render_item(found)
    row = {"id": new_id("fli"), "list_id": list_id, "value": value, "created": now_s()}
    try:
        async with conn.begin_nested():
            await conn.execute(fraud_list_items.insert(), row)
    except sa.exc.IntegrityError:  # added by a concurrent request
        return 200, render_item((await conn.execute(same)).mappings().one())
    await audit.record(
        conn,
        actor,
        "fraud_list.item_added",
        merchant_id=merchant_id,
        object_id=list_id,
        details={"item": row["id"]},
    )
    await bump_revision(conn, merchant_id, livemode)
    return 201, render_item(row)


async def remove_item(
    conn: AsyncConnection,
    actor: Principal,
    merchant_id: str,
    livemode: bool,
    list_id: str,
    item: str,
) -> dict[str, Any]:
    """Remove an item named by its id (`fli_…`) or by its value."""
    lst = await _load_list(conn, merchant_id, livemode, list_id)
    c = fraud_list_items.c
    match = c.id == item
    # Not a value of this list's kind: only the id can match.
    with contextlib.suppress(ItemRefused):
        match = sa.or_(match, c.value == normalize_item(lst["kind"], item))
    found = (
        (await conn.execute(sa.select(fraud_list_items).where(c.list_id == list_id, match)))
        .mappings()
        .first()
    )
    if found is None:
        raise NotFound("No such item in this fraud list.", param="item")
    await conn.execute(fraud_list_items.delete().where(c.id == found["id"]))
    await audit.record(
        conn,
        actor,
        "fraud_list.item_removed",
        merchant_id=merchant_id,
        object_id=list_id,
        details={"item": found["id"]},
    )
    await bump_revision(conn, merchant_id, livemode)
    return {"id": found["id"], "object": "fraud_list_item", "deleted": True}


async def list_items_page(
    conn: AsyncConnection, merchant_id: str, livemode: bool, list_id: str, page: Page
) -> list[dict[str, Any]]:
    await _load_list(conn, merchant_id, livemode, list_id)
    query = sa.select(fraud_list_items).where(fraud_list_items.c.list_id == list_id)
    rows = await fetch_page(conn, query, fraud_list_items.c.id, page)
    return [render_item(r) for r in rows]
