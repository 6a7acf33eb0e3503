"""The versions a block's writes set, by object id: what the read cache's floors need after the
commit (paygate.edge.cache.invalidate), known without reading them back.

    with written.versions() as versions:
        async with db.transaction() as conn:
            ...  # a version-bumping update calls written.record(object_id, version)
    rt.changed(*ids, versions=versions)

The record belongs to the task that opened the block (a context variable) and to the tasks it
starts inside it: another task's writes never mix in. Work run in another context records into
the same dict with `recorded`. A block that raised leaves what it
recorded, which its caller, having failed, does not use; an object written twice keeps the
last version."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

_current: ContextVar[dict[str, int] | None] = ContextVar("paygate_written", default=None)


@contextmanager
def versions(into: dict[str, int] | None = None) -> Iterator[dict[str, int]]:
    """Record the versions written inside the block into the dict it yields (`into`, or a new
    one)."""
    found: dict[str, int] = {} if into is None else into
    token = _current.set(found)
    try:
        yield found
    finally:
        _current.reset(token)


async def recorded(into: dict[str, int], work: Awaitable[T]) -> T:
    """Await `work` with its writes recorded into `into`: for work that runs in a context of its
    own (a task started with another task's context, as `Submission.within` does)."""
    with versions(into):
        return await work


def record(object_id: str, version: int) -> None:
    """`object_id` now stands at `version` in the transaction that wrote it (a no-op outside a
    `versions()` block)."""
    found = _current.get()
    if found is not None:
        found[object_id] = version
