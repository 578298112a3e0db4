"""The compose stack, checked statically (no Docker engine runs here).

`docker compose config` parses and interpolates the files exactly as `up`
would; the JSON it prints is then checked for what would break a deployment
silently: a mount whose source is missing, a config mounted from somewhere
other than the files the other deploy tests check, services that cannot find
each other (names, ports), topics the worker needs but nobody creates, a
worker config the worker would reject, and torch creeping into the image.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy_support import AM_DIR, DEPLOY, IN_CI, PROM_DIR, REPO

COMPOSE = DEPLOY / "compose.yaml"
EXTERNAL = DEPLOY / "compose.external-kafka.yaml"
SERVICES = {"kafka", "topic-init", "worker", "notify-token", "notifier", "prometheus", "alertmanager", "grafana"}
# Mount target in a container -> the file or directory the deploy tests check.
TESTED_MOUNTS = {
    "/etc/prometheus": PROM_DIR,
    "/etc/alertmanager": AM_DIR,
    "/etc/grafana/provisioning": DEPLOY / "grafana" / "provisioning",
    "/var/lib/grafana/dashboards/finsent": DEPLOY / "grafana" / "dashboards",
    "/etc/finsent/finsent.toml": DEPLOY / "finsent.toml",
}
# Built by finsent-train, not committed: the one mount source allowed to be missing.
MODELS = REPO / "models"


def compose_cmd() -> list[str]:
    """`docker compose` (CLI plugin) or a standalone v2 `docker-compose`; skip (locally) or fail (CI) without."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        try:
            r = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            continue
        if r.returncode == 0 and "v2." in r.stdout:
            return cmd
    msg = "docker compose v2 not installed (scripts/install-observability.sh installs it)"
    if IN_CI:
        pytest.fail(f"CI needs {msg}")
    pytest.skip(msg)


def compose_config(*files: Path, env: dict[str, str] | None = None, ok: bool = True) -> Any:
    """`docker compose config` as JSON, in an environment without FINSENT_* / GRAFANA_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FINSENT_", "GRAFANA_"))}
    r = subprocess.run(
        [*compose_cmd(), *[a for f in files for a in ("-f", str(f))], "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, env={**clean, **(env or {})},
    )  # fmt: skip
    if not ok:
        return r
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return compose_config(COMPOSE)


def binds(service: dict[str, Any]) -> dict[str, Path]:
    return {v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"}


def test_compose_parses_with_every_service(stack: dict[str, Any]) -> None:
    assert set(stack["services"]) == SERVICES
    assert stack["services"]["grafana"]["image"].startswith("grafana/grafana:11."), "dashboards target Grafana 11"
    assert stack["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert "KRaft" in COMPOSE.read_text() and stack["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_workers_scale(stack: dict[str, Any]) -> None:
    """--scale worker=N needs replicas that do not collide: no fixed name, no published port."""
    worker = stack["services"]["worker"]
    assert "container_name" not in worker and not worker.get("ports")
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile" and Path(worker["build"]["context"]) == REPO
    assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert set(worker["networks"]) == set(stack["services"]["prometheus"]["networks"])


def test_every_mounted_file_exists(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        for target, source in binds(service).items():
            if source == MODELS:
                continue  # the model bundle: an artifact of finsent-train, documented in deploy/README.md
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_mounted_configs_are_the_tested_ones(stack: dict[str, Any]) -> None:
    mounted: dict[str, Path] = {}
    for service in stack["services"].values():
        mounted.update(binds(service))
    for target, source in TESTED_MOUNTS.items():
        assert mounted.get(target) == source, f"{target} should mount {source}, mounts {mounted.get(target)}"
    prom_cmd = stack["services"]["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom_cmd
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in stack["services"]["alertmanager"]["command"]
    am = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    assert am["templates"] == ["/etc/alertmanager/templates/*.tmpl"]
    assert list((AM_DIR / "templates").glob("*.tmpl"))
    prom = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    for rule_file in prom["rule_files"]:
        assert (PROM_DIR / rule_file).is_file(), rule_file


def test_services_find_each_other(stack: dict[str, Any]) -> None:
    services = stack["services"]
    settings = tomllib.loads((DEPLOY / "finsent.toml").read_text())
    prom = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    finsent_job = next(j for j in prom["scrape_configs"] if j["job_name"] == "finsent")
    # Prometheus discovers every worker replica by the service's DNS name, on the metrics port.
    [sd] = finsent_job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert sd["port"] == settings["metrics"]["port"] == 9464
    assert str(settings["metrics"]["port"]) in services["worker"]["expose"]
    assert settings["metrics"]["host"] == "0.0.0.0", "Prometheus scrapes over the compose network"
    # Prometheus -> Alertmanager, Grafana -> Prometheus, Alertmanager -> notifier.
    am_targets = [t for a in prom["alerting"]["alertmanagers"] for c in a["static_configs"] for t in c["targets"]]
    assert am_targets == ["alertmanager:9093"]
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/finsent.yml").read_text())
    urls = {d["url"] for d in datasources["datasources"]}
    assert urls == {"http://prometheus:9090", "http://alertmanager:9093"}
    am = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    hooks = {h["url"] for r in am["receivers"] for h in r.get("webhook_configs", [])}
    assert hooks == {"http://notifier:9095/alertmanager"}
    assert "0.0.0.0:9095" in services["notifier"]["entrypoint"]
    # Published UIs: Grafana, Prometheus, Alertmanager, and Kafka for host tools.
    published = {s: {p["target"] for p in spec.get("ports", [])} for s, spec in services.items()}
    assert published["grafana"] == {3000} and published["prometheus"] == {9090}
    assert published["alertmanager"] == {9093} and published["kafka"] == {29092}


def test_topic_init_creates_every_topic_the_worker_uses(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_deploy_settings(monkeypatch)
    init = stack["services"]["topic-init"]
    assert init["environment"]["TOPICS"].split() == settings.topics.all_topics()
    assert int(init["environment"]["PARTITIONS"]) == settings.topics.partitions
    assert stack["services"]["worker"]["environment"]["FINSENT_TOPICS__PARTITIONS"] == str(settings.topics.partitions)
    script = " ".join(init["command"])
    assert "--if-not-exists" in script and "$TOPICS" in script


def load_deploy_settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    from monitor.settings import load_settings

    for key in [k for k in os.environ if k.startswith("FINSENT_")]:
        monkeypatch.delenv(key)
    return load_settings(DEPLOY / "finsent.toml")


def test_worker_config_is_accepted_by_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's own settings object (extra keys forbidden) loads the container config."""
    s = load_deploy_settings(monkeypatch)
    assert s.kafka.bootstrap == "kafka:9092" and s.kafka.profile == "kafka"
    assert str(s.model.path) == "/app/models/finsent-minilm-l6"
    assert (s.metrics.host, s.metrics.port) == ("0.0.0.0", 9464)


def test_kafka_security_settings_pass_through(stack: dict[str, Any]) -> None:
    """SASL/TLS variables reach worker and notifier only when set in the shell (unset: the toml applies)."""
    names = [
        "SECURITY_PROTOCOL",
        "SASL_MECHANISM",
        "SASL_USERNAME",
        "SASL_PASSWORD",
        "SASL_PASSWORD_FILE",
        "SSL_CAFILE",
    ]
    for service in ("worker", "notifier"):
        env = stack["services"][service]["environment"]
        assert env["FINSENT_KAFKA__BOOTSTRAP"] == "kafka:9092"
        for name in names:
            assert f"FINSENT_KAFKA__{name}" in env and env[f"FINSENT_KAFKA__{name}"] is None, (service, name)
    shell = {"FINSENT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "FINSENT_KAFKA__SASL_USERNAME": "finsent"}
    env = compose_config(COMPOSE, env=shell)["services"]["worker"]["environment"]
    assert env["FINSENT_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL" and env["FINSENT_KAFKA__SASL_USERNAME"] == "finsent"


def test_external_kafka_override() -> None:
    env = {"FINSENT_KAFKA__BOOTSTRAP": "broker1:9093,broker2:9093"}
    ext = compose_config(COMPOSE, EXTERNAL, env=env)
    assert set(ext["services"]) == SERVICES - {"kafka", "topic-init"}, "bundled broker must not start"
    worker = ext["services"]["worker"]
    assert not worker.get("depends_on")
    assert worker["environment"]["FINSENT_KAFKA__BOOTSTRAP"] == "broker1:9093,broker2:9093"
    assert binds(worker)["/run/secrets/finsent"] == DEPLOY / "secrets"
    assert set(ext["services"]["notifier"]["depends_on"]) == {"worker", "notify-token"}
    # Without a bootstrap the override refuses to start rather than silently using kafka:9092.
    r = compose_config(COMPOSE, EXTERNAL, ok=False)
    assert r.returncode != 0 and "FINSENT_KAFKA__BOOTSTRAP" in r.stderr


def test_worker_image_is_runtime_only() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    installs = [line for line in instructions if "pip install" in line]
    assert installs == ['RUN pip install ".[cpu]" \\'], installs
    assert not re.search(r"torch|transformers|\[.*train", "\n".join(instructions))
    assert instructions[-1] == 'ENTRYPOINT ["finsent", "worker", "--config", "/etc/finsent/finsent.toml"]'
    assert "USER finsent" in instructions
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert next(x for x in ignore if not x.startswith("#")) == "*", "the build context is an allow-list"
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (REPO / copied).exists(), copied


NOTIFY_TOKEN = "/run/secrets/notify/token"


def volumes(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Named volumes: target -> (volume, read-only)."""
    return {
        v["target"]: (v["source"], bool(v.get("read_only")))
        for v in service.get("volumes", [])
        if v["type"] == "volume"
    }


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, EXTERNAL)], ids=["bundled-kafka", "external-kafka"])
def test_notifier_and_alertmanager_share_the_generated_token(files: tuple[Path, ...]) -> None:
    """One token, made by the notify-token job before either starts; the notifier checks it, Alertmanager sends it."""
    services = compose_config(*files, env={"FINSENT_KAFKA__BOOTSTRAP": "b1:9093"})["services"]
    mount = str(Path(NOTIFY_TOKEN).parent)
    assert volumes(services["notify-token"])[mount] == ("notify-token", False)
    for name in ("notifier", "alertmanager"):
        assert volumes(services[name])[mount] == ("notify-token", True), name
        assert services[name]["depends_on"]["notify-token"]["condition"] == "service_completed_successfully", name
    assert services["notifier"]["environment"]["FINSENT_NOTIFY_TOKEN_FILE"] == NOTIFY_TOKEN
    assert "FINSENT_NOTIFY_TOKEN" not in services["notifier"]["environment"], "the value would show in docker inspect"
    am = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    to_notifier = [h for r in am["receivers"] for h in r.get("webhook_configs", []) if "notifier:9095" in h["url"]]
    assert to_notifier and all(
        h["http_config"]["authorization"] == {"type": "Bearer", "credentials_file": NOTIFY_TOKEN} for h in to_notifier
    )


def test_notify_token_job_makes_a_token_once(stack: dict[str, Any], tmp_path: Path) -> None:
    """The job's own script, run here against a directory standing in for the volume."""
    from monitor.cli.notify import load_token

    job = stack["services"]["notify-token"]
    assert job["entrypoint"] == ["python", "-c"] and job["user"] == "0:0" and job["network_mode"] == "none"
    script = job["command"][0].replace(str(Path(NOTIFY_TOKEN).parent), str(tmp_path))
    token = tmp_path / "token"
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=30)
    first = load_token(str(token), {})
    assert first is not None and re.fullmatch(r"[0-9a-f]{64}", first)
    assert stat.S_IMODE(token.stat().st_mode) == 0o444, "readable by the notifier's user and Alertmanager's"
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=30)
    assert load_token(str(token), {}) == first, "a restart keeps the token"
    token.chmod(0o644)
    token.write_text("")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=30)
    again = load_token(str(token), {})
    assert again is not None and again != first and len(again) == 64, "an emptied file gets a new token"
