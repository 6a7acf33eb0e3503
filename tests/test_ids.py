"""Ids sort by the time they were made, and within one process in the order they were made."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate import ids


def _body(value: str) -> str:
    return value.split("_", 1)[1]


@given(st.lists(st.integers(min_value=-3, max_value=2), min_size=2, max_size=60))
def test_ids_sort_in_the_order_they_were_made(steps: list[int]) -> None:
    """Whatever the clock does between two ids (stands still, steps back, goes on)."""
    clock = [1_700_000_000_000]

    def time_ns() -> int:
        return clock[0] * 1_000_000

    made = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time_ns", time_ns)
        for step in steps:
            clock[0] += step
            made.append(ids.new_id("txl"))
    assert sorted(made) == made
    assert len(set(made)) == len(made)


def test_ids_made_by_threads_at_once_are_distinct_and_ordered_per_thread() -> None:
    per_thread: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(ids.new_id("pay") for _ in range(2000))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in per_thread for i in out]
    assert len(set(everything)) == len(everything)
    assert all(sorted(out) == out for out in per_thread)


def test_an_id_dated_by_the_caller_keeps_its_date() -> None:
    dated = ids.new_id("pay", now_ms=1_600_000_000_000)
    assert dated < ids.new_id("pay", now_ms=1_600_000_000_001)
    assert _body(dated)[:10] == _body(ids.new_id("pay", now_ms=1_600_000_000_000))[:10]
    assert ids.new_id("pay") > dated  # the clock's ids are not held back by a dated one


@given(
    st.integers(min_value=0, max_value=2**130 - 1), st.integers(min_value=0, max_value=2**130 - 1)
)
def test_a_body_is_its_value_in_crockford_base32_and_sorts_as_it(a: int, b: int) -> None:
    def decode(body: str) -> int:
        return int("".join(f"{ids._ALPHABET.index(c):05b}" for c in body), 2)

    assert len(ids._encode(a)) == 26 and decode(ids._encode(a)) == a
    assert (ids._encode(a) < ids._encode(b)) == (a < b)
