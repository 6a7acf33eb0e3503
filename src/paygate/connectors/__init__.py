"""Bank connectors: the interface the payment processor calls, and its HTTP client.

Provider errors are translated here and never leak beyond a connector (see `base.Outcome`).
"""

from paygate.connectors.base import (
    BankConnector,
    BankResult,
    CaptureRequest,
    Card,
    Outcome,
    PaymentRequest,
    RefundRequest,
    VoidRequest,
)
from paygate.connectors.breaker import BreakerState, CircuitBreaker
from paygate.connectors.http import HttpBankConnector, RetryPolicy

__all__ = [
    "BankConnector",
    "BankResult",
    "BreakerState",
    "CaptureRequest",
    "Card",
    "CircuitBreaker",
    "HttpBankConnector",
    "Outcome",
    "PaymentRequest",
    "RefundRequest",
    "RetryPolicy",
    "VoidRequest",
]
