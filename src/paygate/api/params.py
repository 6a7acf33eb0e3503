"""Query parameters shared by list endpoints: cursor pagination and created ranges."""

from __future__ import annotations

from fastapi import Query

from paygate.platform.db.pagination import Page

__all__ = ["Page", "created_params", "page_params"]

# Times are BIGINT columns: a bound beyond a signed 64-bit integer cannot even be sent to either
# driver. This cap (the year 5138) is far past any real time and stays well inside it.
MAX_TIME = 99_999_999_999


def page_params(
    limit: int = Query(10, ge=1, le=100, description="How many objects, 1 to 100."),
    starting_after: str | None = Query(
        None, max_length=40, description="An object id: the page after it (older objects)."
    ),
    ending_before: str | None = Query(
        None, max_length=40, description="An object id: the page before it (newer objects)."
    ),
) -> Page:
    return Page(limit, starting_after, ending_before)


def created_params(
    gt: int | None = Query(None, alias="created[gt]", ge=0, le=MAX_TIME),
    gte: int | None = Query(None, alias="created[gte]", ge=0, le=MAX_TIME),
    lt: int | None = Query(None, alias="created[lt]", ge=0, le=MAX_TIME),
    lte: int | None = Query(None, alias="created[lte]", ge=0, le=MAX_TIME),
) -> dict[str, int]:
    """`created[gte]=…` style bounds on the creation time (Unix seconds)."""
    given = {"gt": gt, "gte": gte, "lt": lt, "lte": lte}
    return {op: value for op, value in given.items() if value is not None}
