"""Who is calling: the key's kind, merchant and mode, and what the edge resolved for the
request (tier, API version, a restricted key's permissions)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # admin | secret | publishable | restricted
    merchant_id: str = ""
    livemode: bool = False
    key_id: str = ""
    tier: str = ""
    # The API version this request is answered in (paygate.edge.versions).
    api_version: str = ""
    # A restricted key's permissions: (resource, "read" | "write" | "none") pairs.
    permissions: tuple[tuple[str, str], ...] = ()
