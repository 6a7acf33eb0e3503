"""The deployment files (`deploy/`) against the code: they run only commands and options the CLI
has, one process per worker role of the pipeline, set only settings the code reads (and values
that parse), probe `/healthz` and `/readyz`, and agree on ports. Parsed, not built: Docker is not
needed, and this runs in well under a second."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml  # type: ignore[import-untyped]  # no stubs in the dev extras
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from paygate.banksim.settings import BankSimSettings
from paygate.cli import app
from paygate.config import Settings
from paygate.pipeline import ROLES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
GATEWAY_SETTINGS: tuple[type[BaseSettings], ...] = (Settings, BankSimSettings)


# What the code offers


def env_names(*models: type[BaseSettings]) -> set[str]:
    """The environment variables the settings classes read: prefix + field name, and aliases."""
    names: set[str] = set()
    for model in models:
        prefix = str(model.model_config.get("env_prefix", ""))
        for name, field in model.model_fields.items():
            names.add(f"{prefix}{name}".upper())
            alias = field.validation_alias
            if isinstance(alias, str):
                names.add(alias.upper())
            elif isinstance(alias, AliasChoices):
                names |= {c.upper() for c in alias.choices if isinstance(c, str)}
    return names


KNOWN_ENV = env_names(*GATEWAY_SETTINGS)


def invocation(argv: list[str]) -> dict[str, Any]:
    """Parse `paygate ARGV` as the CLI would (unknown commands, options or missing arguments
    raise) and return the command's name and its parameters."""
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    assert argv, "no command given"
    assert argv[0] in commands, f"{argv[0]!r} is not a paygate command ({', '.join(commands)})"
    command = commands[argv[0]]
    params: dict[str, Any] = command.make_context(argv[0], list(argv[1:])).params
    if argv[0] == "worker":
        assert params["name"] in ROLES, f"worker role {params['name']!r} not in {ROLES}"
    return {"command": argv[0], **params}


def check_settings(env: dict[str, str], model: type[BaseSettings]) -> BaseSettings:
    """Every PAYGATE_ variable is read by the code, and the values parse (types, literals, the
    production rule that secrets and the database are given)."""
    unknown = {k for k in env if k.startswith("PAYGATE_")} - KNOWN_ENV
    assert not unknown, f"settings the code does not read: {sorted(unknown)}"
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("PAYGATE_"):
                mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        return model()


def port_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


# The Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(rest))  # type: ignore[misc]
    return env


def test_dockerfile_runs_paygate_as_a_user_on_python_311_slim() -> None:
    steps = dockerfile()
    words = [w for w, _ in steps]
    assert dict(steps)["FROM"] == "python:3.11-slim"
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    assert entrypoint == ["paygate"]
    invocation(json.loads(dict(steps)["CMD"]))
    user = dict(steps)["USER"]
    assert user not in ("root", "0")
    assert any(w == "RUN" and "pip install" in r for w, r in steps), "the package is not installed"
    assert any(w == "RUN" and re.search(rf"useradd\b.*\b{user}\b", r) for w, r in steps)
    # Installed as root, run as the user: USER comes after the last RUN.
    assert max(i for i, w in enumerate(words) if w == "RUN") < words.index("USER")
    env = docker_env()
    check_settings(env, Settings)
    assert dict(steps)["EXPOSE"] == env["PAYGATE_PORT"]
    assert env["PAYGATE_HOST"] == "0.0.0.0"


# Compose


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` and `${VAR:?error}`: the default, or a stand-in value."""
    value = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{([A-Z0-9_]+)(:\?[^}]*)?\}", "given-by-the-operator", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def gateway_services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose["services"].items():
        if str(service.get("image", "")).startswith("paygate") or "build" in service:
            yield name, service


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(str(v)) for k, v in env.items()}


def health_urls(check: dict[str, Any]) -> set[tuple[int, str]]:
    """(port, path) of every URL a healthcheck asks for, spelled out or as `'...' + p` over a
    tuple of paths."""
    text = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
    found = {(int(port), path) for port, path in re.findall(r"127\.0\.0\.1:(\d+)(/\w+)", text)}
    for port in re.findall(r"127\.0\.0\.1:(\d+)'\s*\+", text):
        for paths in re.findall(r"in \(([^)]*)\)", text):
            found |= {(int(port), p) for p in re.findall(r"'(/\w+)'", paths)}
    return found


def test_compose_runs_cli_commands_and_every_worker_role(compose: dict[str, Any]) -> None:
    roles: list[str] = []
    commands = set()
    for name, service in gateway_services(compose):
        parsed = invocation(service["command"])
        commands.add(parsed["command"])
        if parsed["command"] == "worker":
            roles.append(parsed["name"])
            assert name == parsed["name"], f"service {name} runs worker {parsed['name']}"
    assert sorted(roles) == sorted(ROLES), "one service per worker role"
    assert {"migrate", "api", "bank-sim", "worker"} <= commands
    api = compose["services"]["api"]
    assert api["deploy"]["replicas"] == 2


def test_compose_sets_only_settings_the_code_reads(compose: dict[str, Any]) -> None:
    for name, service in gateway_services(compose):
        env = compose_env(service)
        parsed = invocation(service["command"])
        if parsed["command"] == "bank-sim":
            check_settings(env, BankSimSettings)
        else:
            settings = check_settings(env, Settings)
            assert isinstance(settings, Settings)
            assert settings.env == "production", name
            assert settings.host == "0.0.0.0", name


def test_compose_healthchecks_and_ports_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in gateway_services(compose):
        parsed = invocation(service["command"])
        env = compose_env(service)
        if parsed["command"] == "migrate":
            assert "healthcheck" not in service
            assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
            continue
        urls = health_urls(service["healthcheck"])
        if parsed["command"] == "bank-sim":
            assert urls == {(int(env["PAYGATE_BANK_PORT"]), "/healthz")}
            continue
        port = int(env["PAYGATE_PORT"]) if parsed["command"] == "api" else parsed["health_port"]
        assert urls == {(port, "/healthz"), (port, "/readyz")}, name
        # Nothing starts before the schema is migrated and the engines are up.
        depends = service["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        for engine in ("nats", "redis", "bank-sim"):
            assert depends[engine]["condition"] == "service_healthy", name
        # The URLs name the compose services, on the ports they serve.
        assert port_of(env["PAYGATE_BANK_URL"]) == (
            "bank-sim",
            int(compose_env(services["bank-sim"])["PAYGATE_BANK_PORT"]),
        )
        assert urlsplit(env["PAYGATE_DATABASE_URL"]).hostname == "postgres"
        assert port_of(env["PAYGATE_BUS_URL"]) == ("nats", nats_conf()["port"])
        assert urlsplit(env["PAYGATE_REDIS_URL"]).hostname == "redis"
    published = services["api"]["ports"][0]
    assert published.rsplit(":", 1)[1] == compose_env(services["api"])["PAYGATE_PORT"]


def nats_conf() -> dict[str, Any]:
    text = (DEPLOY / "nats.conf").read_text()
    store = re.search(r'store_dir:\s*"([^"]+)"', text)
    port = re.search(r"^port:\s*(\d+)", text, re.M)
    assert store and port
    return {
        "port": int(port.group(1)),
        "store_dir": store.group(1),
        "sync_always": re.search(r"sync_interval:\s*always", text) is not None,
    }


def test_compose_nats_keeps_jetstream_on_disk_synced(compose: dict[str, Any]) -> None:
    conf = nats_conf()
    assert conf["sync_always"], "JetStream must sync every write (docs/scaling.md)"
    nats = compose["services"]["nats"]
    config_path = nats["command"][nats["command"].index("-c") + 1]
    mounts = [v.split(":") for v in nats["volumes"]]
    assert ["./nats.conf", config_path, "ro"] in mounts
    volume_targets = [m[1] for m in mounts if m[0] in compose["volumes"]]
    assert any(conf["store_dir"].startswith(t) for t in volume_targets), "store on a volume"


# Kubernetes


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("Deployment", "Job"):
        for name, doc in of_kind(docs, kind).items():
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield f"{kind}/{name}", container


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """What the container sees: its ConfigMaps and Secrets (envFrom), then its own env."""
    maps, secrets = of_kind(docs, "ConfigMap"), of_kind(docs, "Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]]["data"])
        else:
            env.update(secrets[source["secretRef"]["name"]]["stringData"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return env


def probe_port(container: dict[str, Any], probe: str) -> tuple[int, str]:
    get = container[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p.get("name") == port)
    return int(port), get["path"]


def test_k8s_runs_cli_commands_and_every_worker_role(k8s: list[dict[str, Any]]) -> None:
    roles = []
    commands = set()
    for where, container in containers(k8s):
        assert "command" not in container, f"{where}: the image's entrypoint is paygate"
        parsed = invocation(container["args"])
        commands.add(parsed["command"])
        if parsed["command"] == "worker":
            roles.append(parsed["name"])
            assert where == f"Deployment/paygate-{parsed['name']}"
    assert sorted(roles) == sorted(ROLES), "one Deployment per worker role"
    assert {"migrate", "api", "bank-sim", "worker"} <= commands
    jobs = of_kind(k8s, "Job")
    assert [c["args"] for c in jobs["paygate-migrate"]["spec"]["template"]["spec"]["containers"]]
    assert invocation(jobs["paygate-migrate"]["spec"]["template"]["spec"]["containers"][0]["args"])


def test_k8s_sets_only_settings_the_code_reads(k8s: list[dict[str, Any]]) -> None:
    for source in (*of_kind(k8s, "ConfigMap").values(), *of_kind(k8s, "Secret").values()):
        data = source.get("data") or source.get("stringData") or {}
        unknown = {k for k in data if k.startswith("PAYGATE_")} - KNOWN_ENV
        assert not unknown, f"{source['metadata']['name']}: {sorted(unknown)}"
    for where, container in containers(k8s):
        env = container_env(k8s, container)
        if invocation(container["args"])["command"] == "bank-sim":
            check_settings(env, BankSimSettings)
        else:
            settings = check_settings(env, Settings)
            assert isinstance(settings, Settings)
            assert settings.env == "production", where


def test_k8s_probes_resources_and_ports_agree(k8s: list[dict[str, Any]]) -> None:
    config = of_kind(k8s, "ConfigMap")["paygate-config"]["data"]
    for where, container in containers(k8s):
        parsed = invocation(container["args"])
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[bound]), f"{where}: {bound}"
        if parsed["command"] == "migrate":
            continue
        live, ready = (
            probe_port(container, "livenessProbe"),
            probe_port(container, "readinessProbe"),
        )
        if parsed["command"] == "bank-sim":
            port = int(container_env(k8s, container)["PAYGATE_BANK_PORT"])
            assert live == ready == (port, "/healthz"), where
            continue
        port = int(config["PAYGATE_PORT"]) if parsed["command"] == "api" else parsed["health_port"]
        assert live == (port, "/healthz"), where
        assert ready == (port, "/readyz"), where
        assert container["envFrom"], where


def test_k8s_services_autoscalers_and_urls_agree(k8s: list[dict[str, Any]]) -> None:
    deployments = of_kind(k8s, "Deployment")
    for name, service in of_kind(k8s, "Service").items():
        selected = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service/{name} selects {len(selected)} Deployments"
        ports = selected[0]["spec"]["template"]["spec"]["containers"][0]["ports"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in {p["name"] for p in ports} | {
                p["containerPort"] for p in ports
            }
    hpas = of_kind(k8s, "HorizontalPodAutoscaler")
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
    assert targets == {"paygate-api", "paygate-processor"}
    assert targets <= deployments.keys()
    config = of_kind(k8s, "ConfigMap")["paygate-config"]["data"]
    host, port = port_of(config["PAYGATE_BANK_URL"])
    bank = of_kind(k8s, "Service")[host]
    assert [p["port"] for p in bank["spec"]["ports"]] == [port]
    assert int(config["PAYGATE_BANK_PORT"]) == port


def test_k8s_pods_run_as_the_image_user_and_kustomize_lists_every_file(
    k8s: list[dict[str, Any]],
) -> None:
    uid = next(
        int(m.group(1))
        for w, r in dockerfile()
        if w == "RUN" and (m := re.search(r"useradd .*--uid (\d+)", r))
    )
    for kind in ("Deployment", "Job"):
        for name, doc in of_kind(k8s, kind).items():
            pod = doc["spec"]["template"]["spec"]["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, name
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    # The Secret is a template the operator fills in; everything else is applied.
    expected = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == expected
