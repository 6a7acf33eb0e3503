"""The edge's state: per application (`Edge`, on `app.state.edge`) and per request (`Exchange`,
in the ASGI scope, shared by the auth dependency and the outermost middleware)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from paygate.edge import versions
from paygate.edge.gcra import Clock, Limiter, PolicyState
from paygate.edge.keys import KeyCache
from paygate.edge.ratelimit import FailedAuthThrottle, limiter_for
from paygate.edge.tiers import Tiers

if TYPE_CHECKING:
    from paygate.runtime import Runtime

SCOPE_KEY = "paygate.exchange"


@dataclass
class Exchange:
    """What the edge learned about one request, for its response's headers."""

    requested_version: str | None = None  # the `Paygate-Version` header, validated
    api_version: str | None = None  # the version the request is answered in
    limits: tuple[PolicyState, ...] = ()


@dataclass
class Edge:
    tiers: Tiers
    limiter: Limiter
    keys: KeyCache
    auth_failures: FailedAuthThrottle
    clock: Clock = time.time

    @classmethod
    def build(cls, rt: Runtime) -> Edge:
        """The edge of an app; settings that name no tier or version stop it from starting."""
        if not versions.is_version(rt.settings.default_api_version):
            raise ValueError(
                f"PAYGATE_DEFAULT_API_VERSION must be one of {', '.join(versions.VERSIONS)}"
            )
        return cls(
            tiers=Tiers.from_settings(rt.settings),
            limiter=limiter_for(rt.cache),
            keys=KeyCache(rt.settings.key_cache_ttl_s),
            auth_failures=FailedAuthThrottle(rt.settings.auth_failures_per_min),
        )


def exchange(conn: HTTPConnection) -> Exchange:
    found: Exchange = conn.scope.setdefault(SCOPE_KEY, Exchange())
    return found


def edge_of(conn: HTTPConnection) -> Edge:
    """The app's edge; built on first use for an app assembled without `create_app`."""
    state = conn.app.state
    edge: Edge | None = getattr(state, "edge", None)
    if edge is None:
        edge = state.edge = Edge.build(state.runtime)
    return edge
