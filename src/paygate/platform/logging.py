"""Structured logs (structlog): JSON lines in production, readable lines on a terminal.

`PAYGATE_LOG_FORMAT` chooses `json` or `console`; unset, lines are JSON unless the output is a
terminal. Every line passes a redaction processor: card numbers (any Luhn-valid run of 13 to 19
digits, with or without separators), CVCs, secrets and API keys never reach a log, whatever field,
key, nested value or exception message holds them. Every line written inside a traced span carries
its `trace_id` and `span_id` (W3C hex, as trace back ends show them), and the `payment_id` and
`merchant_id` bound for the request or event being handled (paygate.platform.tracing).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from paygate.vault.cards import luhn_valid

# Digit groups joined by single spaces or dashes. A card number is printed whole or grouped
# ("4242 4242 4242 4242") and may sit next to other numbers ("4242424242424242 12 30"), so every
# span of whole groups in a run is checked, not only the run as a whole.
_DIGIT_RUN = re.compile(r"(?<!\d)\d+(?:[ -]\d+)*(?!\d)")
_SEPARATOR = re.compile(r"([ -])")
# Thirteen characters in a row that are digits or separators: the least a card number needs.
_CARD_LIKE = re.compile(r"[\d -]{13}")
# API keys, the admin key as `paygate serve` generates it, and webhook signing secrets.
# Not `\b`: an underscore is a word character, and `token=api_sk_test_…` must not hide one.
_KEY = re.compile(
    r"(?<![A-Za-z0-9])(?:(?:sk|rk|pk|whsec)_(?:test|live)_[A-Za-z0-9]+|sk_admin_\w+"
    r"|whsec_[A-Za-z0-9]+)"
)
_SECRET_FIELDS = frozenset(
    {
        "cvc",
        "cvv",
        "number",
        "card_number",
        "pan",
        "secret",
        "api_key",
        "authorization",
        "password",
        "admin_key",
        "publishable_key",
    }
)
# Field names that hold a secret whatever their exact spelling (`card_cvc`, `signing_secret`,
# `x-api-key`): the value is dropped whole, since a CVC or a password has no shape to find.
_SECRET_PART = re.compile(
    r"cvc|cvv|secret|passw|api.?key|authorization|admin.?key|publishable.?key|private.?key"
    r"|card.?number"
)
# Keys structlog's stdlib bridge uses for its own objects; they are removed before rendering.
_META = frozenset({"_record", "_from_structlog"})
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    """Mask card numbers and API keys inside free text."""
    # Most text holds neither, and a scan in C says so: a card number needs 13 digits in a run,
    # and every key's prefix ends in `k_` or `c_`. Masking calls back into Python for every run
    # of digits (an id's, a timestamp's); the key pattern is slow to try at every position.
    if _CARD_LIKE.search(text) is not None:
        text = _DIGIT_RUN.sub(_mask_card_numbers, text)
    return _KEY.sub(REDACTED, text) if "k_" in text or "c_" in text else text


def _mask_card_numbers(match: re.Match[str]) -> str:
    parts = _SEPARATOR.split(match.group(0))
    groups, seps = parts[0::2], parts[1::2]
    masked = [False] * len(groups)
    for i in range(len(groups)):
        digits = ""
        for j in range(i, len(groups)):
            digits += groups[j]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_valid(digits):
                masked[i : j + 1] = [True] * (j + 1 - i)
    out = []
    for i, group in enumerate(groups):
        if i and not (masked[i] and masked[i - 1]):
            out.append(seps[i - 1])
        if not masked[i]:
            out.append(group)
        elif not (i and masked[i - 1]):
            out.append(REDACTED)
    return "".join(out)


def secret_field(name: Any) -> bool:
    """Whether a field of that name holds a secret (its value is dropped whole)."""
    lowered = str(name).lower()
    return lowered in _SECRET_FIELDS or _SECRET_PART.search(lowered) is not None


def redact_key(key: Any) -> Any:
    """A mapping's key, with any card number or API key in it masked."""
    return redact_text(key) if isinstance(key, str) else redact_value(key, 6)


def redact_value(value: Any, depth: int = 0) -> Any:
    """`value` with card numbers and API keys masked and secret fields dropped, at any depth
    (past 6 levels, the rest is dropped)."""
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return redact_text(str(value)) if abs(value) >= 10**12 else value
    if depth > 6:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            redact_key(k): REDACTED if secret_field(k) else redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    # Anything else would be rendered through its repr: redact that text.
    return redact_text(repr(value))


@functools.lru_cache(maxsize=1024)
def _field(key: Any) -> tuple[Any, bool]:
    """A log field's name as written, and whether its value is a secret. The names come from
    the code, a few dozen of them: each is judged once."""
    return redact_key(key), secret_field(key)


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in _META:
            continue
        value = event_dict.pop(key)
        safe_key, secret = _field(key)
        event_dict[safe_key] = REDACTED if secret else redact_value(value)
    return event_dict


def add_trace_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The current span's trace and span ids (after redaction: a hex id may hold a run of
    digits that looks like a card number, and is none)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def configure_logging(fmt: str | None = None, level: str = "info") -> None:
    """Set up structlog and route the standard library's loggers (uvicorn, alembic) through it."""
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
        add_trace_context,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per bank call is noise


log = structlog.get_logger("paygate")
