"""`paygate serve` from the outside: the whole gateway in one process, over real HTTP, with the
bank simulator mounted under /bank and reached over HTTP."""

from __future__ import annotations

import json
import signal

import pytest

from tests.e2e.serve import Gateway, gateway
from tests.support import ADMIN_KEY, idem, payment_body

__all__ = ["gateway"]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_runs_the_whole_gateway(gateway: Gateway) -> None:
    proc = gateway.start(demo=True)
    keys = json.loads((gateway.data_dir / "demo-merchant.json").read_text())
    auth = {"Authorization": f"Bearer {keys['api_key']}"}
    ready = gateway.request("GET", "/readyz").json()
    assert ready["status"] == "ready"
    assert ready["checks"]["database"]["backend"] == "sqlite"

    r = gateway.request(
        "POST", "/v1/payments", json=payment_body(), headers={**auth, **idem(), "Prefer": "wait=10"}
    )
    assert r.status_code == 200, r.text
    payment = r.json()
    assert payment["status"] == "succeeded" and payment["amount_captured"] == 1999

    ops = gateway.request("GET", "/bank/v1/operations", params={"payment": payment["id"]})
    assert [(o["operation"], o["status"]) for o in ops.json()["data"]] == [("sale", "approved")]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert gateway.request("GET", "/v1/merchants", headers=admin).status_code == 200

    proc.send_signal(signal.SIGINT)  # Ctrl-C stops it cleanly
    assert proc.wait(timeout=15) == 0, gateway.log_text()
    # The banner's example uses the published test number; no log line may carry a card number.
    lines = [line for line in gateway.log_text().splitlines() if line.startswith("{")]
    assert lines and not any("4242424242424242" in line for line in lines)
