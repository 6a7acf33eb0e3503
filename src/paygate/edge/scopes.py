"""What a key may do. Secret keys (`sk_`) may do everything their merchant may; restricted keys
(`rk_`) only what their permissions grant, per resource: `read` (GET), `write` (everything, reads
included) or `none`; publishable keys (`pk_`) only tokenize cards (`POST /v1/tokens`). A resource
a restricted key has no permission for, or that permissions do not cover (keys, the audit log),
is refused: deny by default."""

from __future__ import annotations

from paygate.edge.principal import Principal
from paygate.errors import PermissionDenied

RESOURCES = (
    "payments",
    "refunds",
    "customers",
    "webhook_endpoints",
    "events",
    "balance",
    "settlements",
    "fraud",
)
# Paths whose first segment is not the resource's name.
ALIASES = {
    "balance_transactions": "balance",
    "fraud_reports": "fraud",
    "reviews": "fraud",
}
LEVELS = ("none", "read", "write")
READS = frozenset({"GET", "HEAD"})


def resource_of(path: str) -> str:
    """`/v1/payments/pay_…/capture` → `payments`; `/v1/fraud_reports` → `fraud`."""
    parts = path.split("/")
    segment = parts[2] if len(parts) > 2 and parts[1] == "v1" else ""
    return ALIASES.get(segment, segment)


def require(principal: Principal, method: str, path: str) -> None:
    """Refuse the request when a restricted key's permissions do not cover it."""
    if principal.kind != "restricted":
        return
    resource = resource_of(path)
    granted = dict(principal.permissions).get(resource, "none")
    needed = "read" if method in READS else "write"
    if granted == "write" or granted == needed:
        return
    if resource not in RESOURCES:
        raise PermissionDenied(
            "A restricted key cannot call this endpoint; use a secret key.",
            code="insufficient_permissions",
        )
    raise PermissionDenied(
        f"This restricted key has no {needed} permission on {resource}.",
        code="insufficient_permissions",
    )
