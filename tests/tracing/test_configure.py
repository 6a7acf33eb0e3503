"""`configure_tracing` follows the standard OpenTelemetry environment: no exporter by default,
`console` and `otlp` (over HTTP, to `OTEL_EXPORTER_OTLP_ENDPOINT`) on request, the process's
role as the service name unless `OTEL_SERVICE_NAME` says otherwise. Each case runs in a process
of its own: a tracer provider is installed once per process."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.notifications.support import Receiver

PROBE = """
from paygate.platform.tracing import TRACER, configure_tracing, shutdown_tracing
configure_tracing("paygate-worker-fraud")
with TRACER.start_as_current_span("probe-span"):
    pass
shutdown_tracing()
"""


def run(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_nothing_is_exported_by_default() -> None:
    done = run()
    assert "probe-span" not in done.stdout + done.stderr


def test_console_exporter_names_the_role_as_the_service() -> None:
    done = run(OTEL_TRACES_EXPORTER="console")
    assert '"name": "probe-span"' in done.stdout
    assert '"service.name": "paygate-worker-fraud"' in done.stdout


def test_the_service_name_from_the_environment_wins() -> None:
    done = run(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="fraud-eu-1")
    assert '"service.name": "fraud-eu-1"' in done.stdout


def test_otlp_exporter_posts_to_the_configured_endpoint() -> None:
    collector = Receiver()
    try:
        run(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url(""))
        posts = collector.at("/v1/traces")
        assert posts, "nothing reached the collector"
        body = b"".join(p.body for p in posts)
        assert b"probe-span" in body and b"paygate-worker-fraud" in body
    finally:
        collector.close()


def test_sdk_disabled_installs_nothing() -> None:
    done = run(OTEL_TRACES_EXPORTER="console", OTEL_SDK_DISABLED="true")
    assert "probe-span" not in done.stdout
