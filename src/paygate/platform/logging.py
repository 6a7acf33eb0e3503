"""Structured logs (structlog): JSON lines in production, readable lines on a terminal.

Every line passes a redaction processor: card numbers (any Luhn-valid run of 13 to 19 digits, with
or without separators), CVCs, secrets and API keys never reach a log, whatever field holds them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from paygate.vault.cards import luhn_valid

# Digit groups joined by single spaces or dashes. A card number is printed whole or grouped
# ("4242 4242 4242 4242") and may sit next to other numbers ("4242424242424242 12 30"), so every
# span of whole groups in a run is checked, not only the run as a whole.
_DIGIT_RUN = re.compile(r"(?<!\d)\d+(?:[ -]\d+)*(?!\d)")
_SEPARATOR = re.compile(r"([ -])")
# API keys, the admin key as `paygate serve` generates it, and webhook signing secrets.
_KEY = re.compile(
    r"\b(?:sk|rk|pk|whsec)_(?:test|live)_[A-Za-z0-9]+|\bsk_admin_\w+|\bwhsec_[A-Za-z0-9]+"
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
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    """Mask card numbers and API keys inside free text."""
    return _KEY.sub(REDACTED, _DIGIT_RUN.sub(_mask_card_numbers, text))


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


def redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth > 6:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: REDACTED if str(k).lower() in _SECRET_FIELDS else redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10**12:
        return redact_text(str(value))
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _SECRET_FIELDS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(event_dict[key])
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
