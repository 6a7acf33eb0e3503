"""Tables of this service (filled in with its migration)."""

from __future__ import annotations

from paygate.platform.db.tables import metadata  # noqa: F401
