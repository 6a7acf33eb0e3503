"""Log redaction: card numbers, CVCs, secrets and API keys never reach a log line, whatever field or
text holds them (DESIGN.md section 2, Card data; STYLE.md rule 11)."""

from __future__ import annotations

import json
import logging
import random
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from paygate.platform.logging import (
    REDACTED,
    configure_logging,
    redact_processor,
    redact_text,
    secret_field,
)
from paygate.vault.cards import luhn_valid

DIGITS = "0123456789"


def luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it Luhn-valid."""
    return next(body + d for d in DIGITS if luhn_valid(body + d))


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid number of 13 to 19 digits, as digits only or split into groups by single
    spaces or dashes (how card numbers are typed and printed)."""
    length = draw(st.integers(13, 19))
    digits = luhn_complete(draw(st.text(DIGITS, min_size=length - 1, max_size=length - 1)))
    cuts = draw(st.lists(st.integers(1, length - 1), unique=True, max_size=6))
    seps = draw(st.lists(st.sampled_from(" -"), min_size=len(cuts), max_size=len(cuts)))
    out, last = [], 0
    for cut, sep in zip(sorted(cuts), seps, strict=True):
        out += [digits[last:cut], sep]
        last = cut
    return "".join([*out, digits[last:]])


def stripped(text: str) -> str:
    """Without the separators card numbers are printed with."""
    return re.sub(r"[ -]", "", text)


# Text around a number: any text, and other numbers printed next to it (an expiry, an amount).
# The character touching it is never a digit: a digit there would make it a different, longer
# number.
surrounding = st.lists(
    st.one_of(st.text(max_size=8), st.sampled_from([" ", "-", " 12", " 12 30", "/30", " 1999"])),
    max_size=4,
).map("".join)


@st.composite
def embedded(draw: st.DrawFn) -> tuple[str, str]:
    number = draw(card_numbers())
    before = draw(surrounding.filter(lambda s: not s[-1:].isdigit()))
    after = draw(surrounding.filter(lambda s: not s[:1].isdigit()))
    # The check below looks for the number's digits in the output: the surrounding text must
    # not hold them already.
    assume(stripped(number) not in stripped(before) + " " + stripped(after))
    return number, before + number + after


def leaks(number: str, text: str) -> bool:
    """Whether the number shows in `text`, in its given form or as plain digits."""
    return number in text or stripped(number) in stripped(text)


@given(embedded())
@settings(max_examples=300)
def test_redact_text_masks_every_card_number(case: tuple[str, str]) -> None:
    number, text = case
    out = redact_text(text)
    assert not leaks(number, out), (text, out)
    assert REDACTED in out


@given(st.lists(embedded(), min_size=2, max_size=4), st.sampled_from([" ", ", ", " / ", "\n"]))
@settings(max_examples=100)
def test_redact_text_masks_several_numbers_in_one_text(
    cases: list[tuple[str, str]], joiner: str
) -> None:
    text = joiner.join(t for _, t in cases)
    out = redact_text(text)
    for number, _ in cases:
        assert not leaks(number, out), (text, out)


def test_redact_text_keeps_what_is_not_a_card_number() -> None:
    # Not Luhn-valid, too short, too long, or times and amounts: left as they are.
    for text in (
        "4242424242424241",
        "order 123456789012 paid",
        "id 42424242424242424242424 is long",
        "at 2026-11-24T22:14:20Z, 1999 usd",
        "pay_01M87SYP2K6XF28F8S1RCFY1PZ",
    ):
        assert redact_text(text) == text


def test_redact_text_masks_a_number_followed_by_other_numbers() -> None:
    # The expiry or an amount printed after the number must not hide it from the redactor.
    for text in (
        "card 4242424242424242 12 30",
        "card 4242 4242 4242 4242 12/30",
        "4000-0000-0000-0002 1999",
        "7 378282246310005 1",
    ):
        out = redact_text(text)
        for number in ("4242424242424242", "4000000000000002", "378282246310005"):
            assert number not in stripped(out), (text, out)
        assert REDACTED in out, text


KEY_BODY = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=8)


@given(
    st.sampled_from(
        ["sk_test_", "pk_test_", "sk_live_", "pk_live_", "rk_test_", "whsec_", "sk_admin_"]
    ),
    KEY_BODY,
    st.text(max_size=20).filter(lambda s: not re.search(r"\w$", s)),
    st.text(max_size=20).filter(lambda s: not re.match(r"\w", s)),
)
def test_redact_text_masks_api_keys(prefix: str, body: str, before: str, after: str) -> None:
    key = prefix + body
    out = redact_text(before + key + after)
    assert key not in out and body not in out
    assert REDACTED in out


# Text made of what the masks look for: digits, separators, key prefixes, ids and letters.
pieces = st.one_of(
    st.text("0123456789 -", max_size=24),
    st.sampled_from(
        ["sk_test_", "rk_live_", "whsec_", "sk_admin_", "pay_01M87SYP2K", "_", "k", "c"]
    ),
    card_numbers(),
    st.text(max_size=6),
)


@given(st.lists(pieces, max_size=8).map("".join))
@settings(max_examples=500)
def test_redact_text_skips_only_what_could_not_be_masked(text: str) -> None:
    # `redact_text` tries a mask only where a quick scan finds what it needs (13 digits in a
    # run, a key's prefix): its answer is the one trying every mask everywhere gives.
    from paygate.platform.logging import _DIGIT_RUN, _KEY, _mask_card_numbers

    assert redact_text(text) == _KEY.sub(REDACTED, _DIGIT_RUN.sub(_mask_card_numbers, text))


SECRET_FIELDS = ["cvc", "cvv", "secret", "api_key", "password", "authorization", "admin_key"]


def case_variants(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.upper(), name.capitalize()])


secret_names = st.sampled_from(SECRET_FIELDS).flatmap(case_variants)
# Values a secret field might hold: a short CVC is no card number, so only the key protects it.
secret_values = st.one_of(
    st.text(DIGITS, min_size=3, max_size=4), st.text(min_size=1), st.integers(100, 9999)
)
plain_keys = st.text(min_size=1, max_size=12).filter(
    lambda k: k.lower() not in {*SECRET_FIELDS, "number", "card_number", "pan", "publishable_key"}
)


@st.composite
def nested_with_secrets(draw: st.DrawFn) -> tuple[Any, list[str], list[Any]]:
    """A nested dict/list structure (depth ≤ 4) with card numbers in strings and secret fields
    under any key; returns it with the numbers and the secret values it hides."""
    numbers: list[str] = []
    secrets: list[Any] = []

    def leaf() -> Any:
        kind = draw(st.sampled_from(["number", "secret", "plain", "int_pan"]))
        if kind == "number":
            number, text = draw(embedded())
            numbers.append(number)
            return text
        if kind == "int_pan":
            number = luhn_complete(draw(st.text(DIGITS, min_size=15, max_size=15)).lstrip("0"))
            if len(number) < 13:
                return draw(st.integers(0, 999))
            numbers.append(number)
            return int(number)
        if kind == "secret":
            value = draw(secret_values)
            secrets.append(value)
            return {draw(secret_names): value}
        return draw(st.one_of(st.integers(-999, 999), st.booleans(), st.none()))

    def node(depth: int) -> Any:
        if depth >= 4 or draw(st.booleans()):
            return leaf()
        if draw(st.booleans()):
            return [node(depth + 1) for _ in range(draw(st.integers(0, 3)))]
        keys = draw(st.lists(plain_keys, max_size=3, unique=True))
        return {k: node(depth + 1) for k in keys}

    return node(0), numbers, secrets


def rendered(event_dict: dict[str, Any]) -> str:
    """The JSON log line the configured renderer writes."""
    out: str = structlog.processors.JSONRenderer()(None, "info", event_dict)
    return out


def secret_values_left(value: Any) -> list[Any]:
    """Values still held under a secret field name anywhere in `value`."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k.lower() in SECRET_FIELDS and v != REDACTED]
        return found + [x for v in value.values() for x in secret_values_left(v)]
    if isinstance(value, list):
        return [x for v in value for x in secret_values_left(v)]
    return []


@given(nested_with_secrets(), plain_keys)
@settings(max_examples=200)
def test_redact_processor_masks_nested_values(
    case: tuple[Any, list[str], list[Any]], key: str
) -> None:
    value, numbers, secrets = case
    out = dict(redact_processor(None, "info", {"event": "x", key: value}))
    line = rendered(out)
    for number in numbers:
        assert not leaks(number, line), line
    assert secret_values_left(out) == [], line
    if secrets:
        assert REDACTED in line


@given(secret_names, secret_values)
def test_redact_processor_masks_top_level_secret_fields(name: str, value: Any) -> None:
    out = redact_processor(None, "info", {"event": "card.tokenized", name: value, "amount": 1999})
    assert out[name] == REDACTED
    assert out["amount"] == 1999 and out["event"] == "card.tokenized"


def test_redact_processor_masks_the_event_text_and_keys_in_it() -> None:
    out = redact_processor(
        None,
        "info",
        {"event": "charge 4242 4242 4242 4242 with sk_test_abcdefgh1234", "number": "4242"},
    )
    assert out == {"event": f"charge {REDACTED} with {REDACTED}", "number": REDACTED}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`configure_logging` binds the current `sys.stderr` (this test's capture) into structlog and
    the root logger, and structlog loggers keep their first configuration: all of it is put back
    afterwards, so that no later test writes to a closed capture."""

    def uncache() -> None:
        for name, module in list(sys.modules.items()):
            if name.startswith(("paygate", "tests")):
                for value in list(vars(module).values()):
                    if isinstance(value, structlog._config.BoundLoggerLazyProxy):
                        vars(value).pop("bind", None)  # the logger cached on first use

    config = structlog.get_config()
    root = logging.getLogger()
    # pytest adds and removes its own capture handlers per phase: only the others are put back.
    kept = [h for h in root.handlers if not type(h).__module__.startswith("_pytest")]
    level = root.level
    uncache()
    yield
    structlog.configure(**config)
    for handler in root.handlers[:]:
        if not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    for handler in kept:
        root.addHandler(handler)
    root.setLevel(level)
    uncache()


def test_configured_logging_redacts_structlog_and_stdlib_lines(
    capsys: Any, restore_logging: None
) -> None:
    """The processor is wired in: lines written through `configure_logging` (structlog and the
    standard library, as uvicorn and alembic log) come out redacted."""
    configure_logging("json", "info")
    pan = luhn_complete("".join(random.choice(DIGITS) for _ in range(15)))
    structlog.get_logger("paygate.test").info(
        "card.seen", body={"payment_method": {"card": {"number": pan, "cvc": "7351"}}}, note=pan
    )
    logging.getLogger("uvicorn.error").warning("request with %s and sk_test_abcdef123", pan)
    try:
        raise ValueError(f"bad card {pan}")
    except ValueError:
        logging.getLogger("paygate.test").exception("failed")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events[0] == "card.seen"
    assert events[1] == f"request with {REDACTED} and {REDACTED}"
    assert events[2] == "failed" and "ValueError" in lines[2]["exception"]
    assert pan not in err and "7351" not in err and "sk_test_abcdef123" not in err


# Card numbers in every position a log line can hold them: keys, values, nested lists and dicts,
# exception objects given as values, and the exception being logged (its message is in the
# traceback). Words of letters around them must come through untouched.

WORDS = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=10)


@st.composite
def log_events(draw: st.DrawFn) -> tuple[dict[str, Any], str | None, list[str], list[str]]:
    """An event dict, the message of an exception to log with it (or None), the card numbers
    put in, and the plain words put in (each once, none a secret field's name)."""
    cards: list[str] = []
    words: list[str] = []

    def word() -> str:
        w = draw(WORDS.filter(lambda w: w not in words and not secret_field(w)))
        words.append(w)
        return w

    def card() -> str:
        number = draw(card_numbers())
        cards.append(number)
        return number

    def text() -> str:
        if draw(st.booleans()):
            return f"{word()} {card()} {word()}"
        return word()

    def key() -> str:
        return f"{word()} {card()}" if draw(st.booleans()) else word()

    def node(depth: int) -> Any:
        kinds = ["text", "exception"] + (["list", "dict"] if depth < 3 else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "text":
            return text()
        if kind == "exception":
            return ValueError(f"{word()} {card()}")
        if kind == "list":
            return [node(depth + 1) for _ in range(draw(st.integers(1, 3)))]
        return {key(): node(depth + 1) for _ in range(draw(st.integers(1, 3)))}

    event: dict[str, Any] = {"event": text()}
    for _ in range(draw(st.integers(1, 3))):
        event[key()] = node(0)
    raised = f"{word()} {card()}" if draw(st.booleans()) else None
    return event, raised, cards, words


@given(log_events())
@settings(max_examples=200, deadline=None)
def test_no_card_number_survives_in_any_position(
    case: tuple[dict[str, Any], str | None, list[str], list[str]],
) -> None:
    event, raised, cards, words = case
    if raised is not None:
        try:
            raise RuntimeError(raised)
        except RuntimeError as exc:
            event["exc_info"] = exc
    # The configured order: exceptions are formatted first, then everything is redacted.
    formatted = structlog.processors.format_exc_info(None, "error", event)
    line = rendered(dict(redact_processor(None, "error", formatted)))
    for number in cards:
        assert not leaks(number, line), (number, line)
    for word in words:
        assert word in line, (word, line)
    if raised is not None:
        assert "RuntimeError" in line


def test_secret_fields_are_found_whatever_their_spelling() -> None:
    out = redact_processor(
        None,
        "info",
        {
            "event": "x",
            "card_cvc": "123",
            "signing_secret": "abc",
            "X-Api-Key": "k",
            "body": {"cvv2": 999, "client_secret": "s", "note": "kept"},
            "token": "tok_api_sk_test_abcdefgh1234",
        },
    )
    assert out == {
        "event": "x",
        "card_cvc": REDACTED,
        "signing_secret": REDACTED,
        "X-Api-Key": REDACTED,
        "body": {"cvv2": REDACTED, "client_secret": REDACTED, "note": "kept"},
        "token": f"tok_api_{REDACTED}",
    }


def test_log_lines_carry_the_current_trace_and_the_bound_payment(
    capsys: Any, restore_logging: None
) -> None:
    """Inside a span, every line names its trace and span; inside a log scope, the payment and
    merchant bound to it; after either, nothing of them is left."""
    from opentelemetry.sdk.trace import TracerProvider

    from paygate.platform import tracing

    configure_logging("json", "info")
    logger = structlog.get_logger("paygate.test")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span, tracing.log_scope(event_id="evt_1"):
        tracing.annotate(payment_id="pay_1", merchant_id="acct_1")
        logger.info("inside")
    logger.info("after")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    inside, after = lines
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert (inside["payment_id"], inside["merchant_id"], inside["event_id"]) == (
        "pay_1",
        "acct_1",
        "evt_1",
    )
    assert not {"trace_id", "span_id", "payment_id", "merchant_id", "event_id"} & set(after)


def test_outside_a_log_scope_nothing_is_bound() -> None:
    """`annotate` outside a request or an event would bind ids nothing unbinds: it must not."""
    from paygate.platform import tracing

    tracing.annotate(payment_id="pay_1", merchant_id="acct_1")
    assert "payment_id" not in structlog.contextvars.get_contextvars()
