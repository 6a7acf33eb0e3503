"""The monitoring files in deploy/ against the code: promtool accepts the rules and the scrape
configuration, the alerts fire on the series the gateway exports (promtool's rule unit tests),
every metric the rules and the dashboard name is one the code exports, and every gateway pod of
the Kubernetes manifests is annotated for scraping on the port that serves /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no stubs in the dev extras

from paygate.platform import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "paygate.json"
NAME = re.compile(r"\bpaygate_[a-z0-9_]+\b")
# The series a family exports under its name plus a suffix, by the family's type.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
    "gauge": ("",),
}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    """Run promtool (CI installs it; its absence is a failure, not a skip)."""
    binary = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(binary).exists(), "promtool is not installed"
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def exported(series: str, families: dict[str, str]) -> bool:
    """Whether `series` is a name the code's families export."""
    for kind_name, suffixes in SUFFIXES.items():
        for suffix in suffixes:
            if series.endswith(suffix):
                base = series[: len(series) - len(suffix)] if suffix else series
                if families.get(base) == kind_name:
                    return True
    return False


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [r["expr"] for group in rules["groups"] for r in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_promtool_checks_the_rules() -> None:
    out = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert "SUCCESS" in out


def test_the_alerts_fire_on_the_series_the_gateway_exports() -> None:
    out = promtool("test", "rules", "alerts_test.yml")
    assert "SUCCESS" in out


def test_promtool_checks_the_compose_scrape_configuration() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out


def test_the_resolver_strips_suffixes_by_type() -> None:
    families = metrics.family_types()
    assert exported("paygate_payments_total", families)
    assert exported("paygate_http_request_duration_seconds_bucket", families)
    assert exported("paygate_outbox_unpublished_events", families)
    assert not exported("paygate_payments", families)  # a counter's series ends in _total
    assert not exported("paygate_outbox_unpublished_events_total", families)
    assert not exported("paygate_payments_bucket", families)
    assert not exported("paygate_no_such_metric_total", families)


def test_every_metric_in_the_rules_and_the_dashboard_is_exported() -> None:
    families = metrics.family_types()
    rules, panels = rule_expressions(), dashboard_expressions()
    assert len(rules) >= 5 and len(panels) >= 15
    named = {n for e in rules + panels for n in NAME.findall(e)}
    unknown = sorted(n for n in named if not exported(n, families))
    assert not unknown, f"not exported by paygate.platform.metrics: {unknown}"
    # And the dashboard shows each of the required views.
    text = " ".join(panels)
    for needed in (
        'paygate_payments_total{status="pending"}',
        'paygate_payments_total{status=~"succeeded|failed"}',
        "paygate_payment_outcome_seconds_bucket",
        "paygate_http_request_duration_seconds_bucket",
        "by (failure_code)",
        "paygate_outbox_oldest_unpublished_age_seconds",
        "paygate_bus_consumer_pending_messages",
        "paygate_bank_request_duration_seconds_bucket",
        "paygate_bank_errors_total",
        "paygate_bank_circuit_state",
    ):
        assert needed in text, needed


def test_kubernetes_pods_are_annotated_for_scraping() -> None:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    annotated = set()
    for doc in docs:
        # The bank simulator stands in for an external bank: not the gateway's to scrape.
        if doc["kind"] != "Deployment" or doc["metadata"]["name"] == "bank-sim":
            continue
        template = doc["spec"]["template"]
        notes = template["metadata"].get("annotations", {})
        name = doc["metadata"]["name"]
        assert notes.get("prometheus.io/scrape") == "true", name
        assert notes.get("prometheus.io/path") == "/metrics", name
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
        args = template["spec"]["containers"][0]["args"]
        port = int(args[args.index("--health-port") + 1]) if "--health-port" in args else 8080
        assert int(notes["prometheus.io/port"]) == port and port in ports, name
        annotated.add(name)
    assert len(annotated) == 6  # the API and the five worker roles
    scrape = yaml.safe_load((PROMETHEUS / "kubernetes.yml").read_text())
    relabel = scrape["scrape_configs"][0]["relabel_configs"]
    sources = {s for r in relabel for s in r.get("source_labels", [])}
    assert "__meta_kubernetes_pod_annotation_prometheus_io_scrape" in sources
    assert "__meta_kubernetes_pod_annotation_prometheus_io_port" in sources
    assert scrape["rule_files"] == ["alerts.yml"]
