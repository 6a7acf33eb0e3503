"""The pure rules: signatures, the retry schedule, subscriptions and the address policy."""

from __future__ import annotations

import random
import time

import pytest

from paygate.notifications.models import (
    FIRST_RETRY_S,
    MAX_RETRY_S,
    RETRY_WINDOW_S,
    address_refused,
    host_name_refused,
    new_secret,
    next_try,
    retry_delay,
    signature_header,
    takes,
)
from tests.notifications.support import verify


def test_signature_header_verifies_with_the_standard_library() -> None:
    secret, body = new_secret(), b'{"id":"evt_1","object":"event"}'
    t = int(time.time())
    header = signature_header([secret], t, body)
    assert header.startswith(f"t={t},v1=")
    assert verify(header, body, secret)
    assert not verify(header, body + b" ", secret)
    assert not verify(header, body, new_secret())
    assert not verify(signature_header([secret], t - 3600, body), body, secret)  # a replay


def test_two_secrets_give_two_v1_values_and_either_verifies() -> None:
    old, new, body = new_secret(), new_secret(), b"{}"
    header = signature_header([new, old], 1_700_000_000, body)
    assert header.count("v1=") == 2
    assert verify(header, body, old, tolerance_s=10**10)
    assert verify(header, body, new, tolerance_s=10**10)


def test_secrets_are_prefixed_random_and_alphanumeric() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for s in secrets:
        assert s.startswith("whsec_") and s[6:].isalnum() and len(s) == 6 + 64


def test_retry_delays_grow_exponentially_with_jitter_and_a_ceiling() -> None:
    rng = random.Random(7)
    for failures in range(1, 30):
        ceiling = min(FIRST_RETRY_S * 2 ** (failures - 1), MAX_RETRY_S)
        for _ in range(20):
            assert ceiling / 2 <= retry_delay(failures, rng=rng) <= ceiling
    draws = {retry_delay(3, rng=rng) for _ in range(20)}
    assert len(draws) > 10  # jittered, not one fixed instant
    assert retry_delay(5, scale=0.001, rng=random.Random(1)) < 1


def test_retries_last_three_days_then_stop() -> None:
    start = 1_000_000.0
    now, failures = start, 0
    while True:
        failures += 1
        at = next_try(now, failures, start + RETRY_WINDOW_S)
        if at is None:
            break
        now = at
    assert RETRY_WINDOW_S - MAX_RETRY_S <= now - start <= RETRY_WINDOW_S
    assert 12 <= failures <= 40


def test_only_public_types_are_taken() -> None:
    assert takes(["*"], "payment.succeeded")
    assert takes(["refund.failed"], "refund.failed")
    assert not takes(["refund.failed"], "refund.succeeded")
    assert not takes(["*"], "payment.fraud_assessed")
    assert not takes(["*", "payment.capture_requested"], "payment.capture_requested")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refused(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refused(address) is None


def test_loopback_names_are_refused_before_any_look_up() -> None:
    assert host_name_refused("localhost")
    assert host_name_refused("LOCALHOST.")
    assert host_name_refused("api.localhost")
    assert host_name_refused("example.com") is None
