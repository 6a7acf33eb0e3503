"""The external bank simulator: a separate HTTP service playing an acquiring bank, faults included.

The gateway reaches it only over HTTP (see `paygate.connectors`). Start it alone with
`paygate bank-sim` (`run`), or mount `create_app()` under `/bank` inside the main app.
"""

from paygate.banksim.app import create_app, run
from paygate.banksim.settings import BankSimSettings, FaultConfig

__all__ = ["BankSimSettings", "FaultConfig", "create_app", "run"]
