"""Dated API versions (docs/versioning.md): `/v1` in the path, and within it a `Paygate-Version`
header naming the date of a version.

A request may pin a version with the header; otherwise it is answered in its merchant's version,
fixed when the merchant was created (`merchants.api_version`). Every response names the version
it was answered in. Objects are rendered at the first version (the shape DESIGN.md's contract
describes, and the shape events are stored in) and moved up to newer versions by the changes
below, oldest first, so one rendering serves every version and a webhook can be rendered at its
endpoint's version with `render_for_version`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any

import orjson

HEADER = "Paygate-Version"
VERSIONS = ("2026-01-01", "2026-11-01")
BASE = VERSIONS[0]
LATEST = VERSIONS[-1]
# Deprecated versions: (deprecated on, no longer served after), announced on each response in
# that version with `Deprecation` (RFC 9745) and `Sunset` (RFC 8594). None yet: a version is
# deprecated no sooner than its successor is 12 months old (docs/versioning.md).
DEPRECATED: dict[str, tuple[dt.date, dt.date]] = {}

Up = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Change:
    version: str  # the first version with the change
    objects: frozenset[str]  # the `object` values it applies to
    summary: str
    up: Up  # the object at the version before → the object at `version`


def _last_error(payment: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in payment.items():
        if name == "failure_code":
            out["last_error"] = (
                None
                if value is None
                else {"code": value, "message": payment.get("failure_message")}
            )
        elif name != "failure_message":
            out[name] = value
    return out


CHANGES: tuple[Change, ...] = (
    Change(
        "2026-11-01",
        frozenset({"payment"}),
        "A payment's `failure_code` and `failure_message` become one `last_error` object, "
        '`{"code", "message"}`, or null when the payment has not failed.',
        _last_error,
    ),
)


def is_version(value: str) -> bool:
    return value in VERSIONS


def render_for_version(obj: Any, version: str) -> Any:
    """`obj` (a payment, a refund, an event, a list of them, rendered at the first version) as
    version `version` shows it. Objects without a change pass through unchanged."""
    changes = [c for c in CHANGES if c.version <= version]
    return _render(obj, changes) if changes else obj


def _render(obj: Any, changes: list[Change]) -> Any:
    if not isinstance(obj, dict):
        return obj
    kind = obj.get("object")
    if kind == "list" and isinstance(obj.get("data"), list):
        return {**obj, "data": [_render(item, changes) for item in obj["data"]]}
    if kind == "event" and isinstance(obj.get("data"), dict):
        data = obj["data"]
        return {**obj, "data": {**data, "object": _render(data.get("object"), changes)}}
    for change in changes:
        if kind in change.objects:
            obj = change.up(obj)
    return obj


def deprecation_headers(version: str) -> list[tuple[bytes, bytes]]:
    dates = DEPRECATED.get(version)
    if dates is None:
        return []
    deprecated, sunset = (dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC) for d in dates)
    return [
        (b"deprecation", f"@{int(deprecated.timestamp())}".encode()),
        (b"sunset", format_datetime(sunset, usegmt=True).encode()),
    ]


def render_json_for_version(body: str, version: str) -> bytes:
    """A stored event's JSON text as version `version` shows it: the stored bytes themselves
    when the version changes nothing in it."""
    if not any(c.version <= version for c in CHANGES):
        return body.encode()
    return orjson.dumps(render_for_version(orjson.loads(body), version))
