"""Crash points for fault tests: `PAYGATE_FAULT_POINTS=name,name` makes the process exit hard
(as `kill -9` would) when it reaches a named point. Unset in every real deployment."""

from __future__ import annotations

import os

_points: frozenset[str] = frozenset()


def arm(points: str) -> None:
    global _points
    _points = frozenset(p.strip() for p in points.split(",") if p.strip())


def crash_point(name: str) -> None:
    if name in _points:
        os._exit(137)
