"""The deployment files (docker-compose.yml, Dockerfile, deploy/) checked without a Docker engine: the Compose
Specification's JSON schema, the files they reference, ports and addresses across compose, Prometheus and the
settings, every STREAMWARDEN_* variable against pipeline.settings, every `streamwarden` command against the CLI,
and every metric and label the Grafana dashboard queries against pipeline.observability's registry."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_FILE = ROOT / "deploy/prometheus/prometheus.yml"
DATASOURCES_DIR = ROOT / "deploy/grafana/provisioning/datasources"
DASHBOARD_PROVIDERS_DIR = ROOT / "deploy/grafana/provisioning/dashboards"
DASHBOARD_FILE = ROOT / "deploy/grafana/dashboards/streamwarden.json"
OPERATIONS_DOC = ROOT / "docs/operations.md"
# Vendored from the Go module github.com/compose-spec/compose-go/v2 (v2.17.0, schema/compose-spec.json), the
# schema `docker compose` validates with; SOURCE.md beside it says where from, LICENSE is its Apache-2.0 licence.
COMPOSE_SCHEMA = ROOT / "tests/data/compose-spec/compose-spec.json"

# What a user must set for `docker compose up`; any value will do for the checks.
USER_ENV = {"STREAMWARDEN_CONSOLE__TOKEN": "test-console-token"}

# The panels issue 17 asks for, and the metric (as exposed) each must query.
REQUIRED_PANELS = {
    "Events per second": {"streamwarden_events_total"},
    "Consumer lag per partition": {"streamwarden_consumer_lag"},
    "Alerts per minute": {"streamwarden_alerts_total"},
    "Rejects by reason": {"streamwarden_rejects_total"},
    "Batch latency": {"streamwarden_batch_seconds_bucket"},
    "Event-to-alert latency p50/p99": {"streamwarden_event_to_alert_seconds_bucket"},
    "Model loss": {"streamwarden_model_loss"},
    "Drift events": {"streamwarden_drift_events_total"},
    "Warm-up progress": {"streamwarden_warming_up"},
    "Sink and poll retries": {"streamwarden_sink_retries_total", "streamwarden_poll_retries_total"},
    "Dead letters undeliverable": {"streamwarden_dead_letters_undeliverable"},
}
# Series Prometheus makes itself, with the labels every scraped series carries.
PROMETHEUS_OWN_SERIES = {"up"}


# ------------------------------------------------------------------------------------- helpers: compose


class MissingVariable(Exception):
    pass


_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:?error}`...)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("plain"):
            return env.get(match.group("plain"), "")
        braced = _BRACED.fullmatch(match.group("braced"))
        assert braced, f"bad interpolation {match.group(0)!r}"
        name, op, arg = braced.group("name"), braced.group("op"), braced.group("arg")
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if unset else str(current)
        if op in ("?", ":?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        if op in ("+", ":+"):
            return "" if unset else arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def variables_named(value: Any) -> set[str]:
    """The variables a compose value interpolates."""
    if isinstance(value, dict):
        return set().union(*(variables_named(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(variables_named(v) for v in value)) if value else set()
    if not isinstance(value, str):
        return set()
    names = set()
    for match in _VARIABLE.finditer(value):
        if match.group("plain"):
            names.add(match.group("plain"))
        elif match.group("braced"):
            braced = _BRACED.fullmatch(match.group("braced"))
            assert braced, f"bad interpolation {match.group(0)!r}"
            names.add(braced.group("name"))
    return names


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml must hold a mapping"
    return data


def compose() -> dict[str, Any]:
    """docker-compose.yml as compose sees it once the user has set USER_ENV (merge keys resolved by YAML)."""
    return interpolate(raw_compose(), USER_ENV)


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def streamwarden_invocations(service: Mapping[str, Any]) -> list[list[str]]:
    """Each `streamwarden ...` the service runs, from its command or its `sh -c` script."""
    cmd = command(service)
    if cmd[:1] == ["streamwarden"]:
        return [cmd[1:]]
    if cmd[:2] == ["sh", "-c"]:
        found = []
        for line in cmd[2].splitlines():
            words = shlex.split(line, comments=True)
            if "streamwarden" in words:
                args = words[words.index("streamwarden") + 1 :]
                stops = [i for i, word in enumerate(args) if word in ("&", "&&", ";", "|", "||")]
                found.append(args[: stops[0]] if stops else args)
        return found
    return []


def option(args: list[str], name: str) -> str | None:
    for i, word in enumerate(args):
        if word == name and i + 1 < len(args):
            return args[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def workers() -> dict[str, int]:
    """Worker service -> its metrics port (`--metrics-port` or STREAMWARDEN_OBSERVABILITY__METRICS_PORT)."""
    found = {}
    for name, service in services().items():
        for args in streamwarden_invocations(service):
            if args[:1] == ["run"]:
                port = option(args, "--metrics-port") or environment(service).get(
                    "STREAMWARDEN_OBSERVABILITY__METRICS_PORT"
                )
                assert port, f"worker {name} exports no metrics (--metrics-port)"
                found[name] = int(port)
    return found


def consoles() -> list[str]:
    return [
        name
        for name, service in services().items()
        if any(args[:1] == ["console"] for args in streamwarden_invocations(service))
    ]


def bind_mounts(service: Mapping[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of the service's bind mounts."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2 and parts[0].startswith((".", "/", "~")):
                mounts.append((ROOT / parts[0], PurePosixPath(parts[1])))
        elif volume.get("type") == "bind":
            mounts.append((ROOT / volume["source"], PurePosixPath(volume["target"])))
    return mounts


def named_volume_mounts(service: Mapping[str, Any]) -> list[tuple[str, PurePosixPath]]:
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2 and not parts[0].startswith((".", "/", "~")):
                mounts.append((parts[0], PurePosixPath(parts[1])))
        elif volume.get("type") == "volume":
            mounts.append((volume["source"], PurePosixPath(volume["target"])))
    return mounts


def host_path(service: Mapping[str, Any], container_path: str) -> Path | None:
    """Where a path inside the container comes from on the host (through the service's bind mounts)."""
    path = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    return None


def published_container_ports(service: Mapping[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return ports


# ------------------------------------------------------------------------------------- helpers: prometheus


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))


def scrape_targets() -> list[tuple[str, str, int]]:
    """(job, host, port) of every static and DNS target in prometheus.yml."""
    targets = []
    for job in prometheus_config()["scrape_configs"]:
        for static in job.get("static_configs") or []:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs") or []:
            assert dns.get("type", "SRV") == "A", (
                f"{job['job_name']}: Docker's DNS answers A records, not SRV"
            )
            for name in dns["names"]:
                targets.append((job["job_name"], name, int(dns["port"])))
    return targets


def target_labels() -> set[str]:
    """Labels Prometheus adds to every series it scrapes (job, instance, relabelled and static ones)."""
    labels = {"job", "instance"}
    for job in prometheus_config()["scrape_configs"]:
        labels |= {
            rule["target_label"] for rule in job.get("relabel_configs") or [] if "target_label" in rule
        }
        for static in job.get("static_configs") or []:
            labels |= set(static.get("labels") or {})
    return labels


# ------------------------------------------------------------------------------------- helpers: settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("STREAMWARDEN_"):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_value(settings: Any, variable: str) -> Any:
    """The settings field a nested STREAMWARDEN_SECTION__FIELD variable sets."""
    value = settings
    for part in variable.removeprefix("STREAMWARDEN_").lower().split("__"):
        value = getattr(value, part)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def dockerfile_lines() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for line in dockerfile_lines():
        if line.upper().startswith("ENV "):
            for word in shlex.split(line[4:]):
                if "=" in word:
                    key, value = word.split("=", 1)
                    env[key] = value
    return env


def env_sets() -> Iterator[Any]:
    """The STREAMWARDEN_* environment of each compose service (and the Dockerfile's) that sets any."""
    for name, service in services().items():
        env = {k: v for k, v in environment(service).items() if k.upper().startswith("STREAMWARDEN_")}
        if env:
            yield pytest.param(env, id=name)
    yield pytest.param(
        {k: v for k, v in dockerfile_env().items() if k.startswith("STREAMWARDEN_")}, id="Dockerfile"
    )


# ------------------------------------------------------------------------------------- helpers: PromQL

_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def promql_references(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression (with Grafana variables) refers to."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # label values, $variables in them
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    labels = {
        label.strip() for group in _GROUPING.findall(text) for label in group.split(",") if label.strip()
    }
    text = _GROUPING.sub(" ", text)
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    metrics = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before, after = text[: match.start()], text[match.end() :].lstrip()
        if after.startswith("(") or match.group(0).lower() in _PROMQL_WORDS or re.search(r"[0-9.$]$", before):
            continue
        metrics.add(match.group(0))
    return metrics, labels


def exposed_series() -> dict[str, set[str]]:
    """Every series name the workers and the console expose (counters' _total, histograms' _bucket...) -> its
    label names, from pipeline.observability's metric classes."""
    from prometheus_client.metrics import MetricWrapperBase

    from pipeline import observability

    series: dict[str, set[str]] = {}
    for exporter in (observability.RunnerMetrics, getattr(observability, "ConsoleMetrics", None)):
        if exporter is None:
            continue  # a dashboard query on the console's metrics then fails below, as it should
        metrics = exporter()
        for metric in vars(metrics).values():
            if isinstance(metric, MetricWrapperBase) and metric._labelnames:
                metric.labels(*["x"] * len(metric._labelnames))  # a labelled metric exposes samples once used
        for family in metrics.registry.collect():
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


def query_problems(
    expr: str, legend: str, series: Mapping[str, set[str]], extra_labels: set[str]
) -> list[str]:
    """What in one dashboard query names a series or label the workers do not export."""
    metrics, labels = promql_references(expr)
    labels |= set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend))
    problems = [
        f"{expr!r}: no metric {name!r} in pipeline.observability"
        for name in sorted(metrics)
        if name not in series and name not in PROMETHEUS_OWN_SERIES
    ]
    if not metrics:
        problems.append(f"{expr!r}: names no metric")
    for name in sorted(metrics & set(series)):
        missing = labels - series[name] - extra_labels
        if missing:
            problems.append(
                f"{expr!r}: {name} has no label {sorted(missing)} (it has {sorted(series[name])})"
            )
    return problems


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels") or [])  # a collapsed row holds its panels
    return [panel for panel in panels if panel.get("type") != "row"]


def provisioned_datasource() -> dict[str, Any]:
    datasources = [
        source
        for path in sorted(DATASOURCES_DIR.glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    prometheus = [source for source in datasources if source["type"] == "prometheus"]
    assert len(prometheus) == 1, f"expected one provisioned Prometheus datasource, got {prometheus}"
    return prometheus[0]


# ------------------------------------------------------------------------------------- compose file


def test_compose_file_is_valid_under_the_compose_specification_schema() -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)

    # The schema bites: a typo'd key and a number where compose wants a duration string are both refused.
    broken = compose()
    broken["services"]["redis"]["healthcheck"]["interval"] = 5
    broken["services"]["redis"]["restart_policy"] = "always"
    assert len(list(validator.iter_errors(broken))) == 2


def test_compose_durations_parse_as_go_durations() -> None:
    """The schema leaves durations as strings; compose parses them with Go's time.ParseDuration when it loads."""
    go_duration = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+")
    found = []
    for name, service in services().items():
        fields = {
            f"healthcheck.{key}": value
            for key, value in (service.get("healthcheck") or {}).items()
            if key in ("interval", "timeout", "start_period", "start_interval")
        }
        if "stop_grace_period" in service:
            fields["stop_grace_period"] = service["stop_grace_period"]
        for field, value in fields.items():
            assert isinstance(value, str) and go_duration.fullmatch(value), f"{name}.{field}: {value!r}"
            found.append(field)
    assert len(found) >= 10
    assert not go_duration.fullmatch("5 seconds") and not go_duration.fullmatch("10")


def test_compose_refuses_to_start_without_a_console_token() -> None:
    with pytest.raises(MissingVariable, match="STREAMWARDEN_CONSOLE__TOKEN"):
        interpolate(raw_compose(), {})
    assert "test-console-token" in environment(services()["console"]).values()


def test_files_referenced_by_compose_exist() -> None:
    checked = 0
    for name, service in services().items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
            checked += 1
        for source, target in bind_mounts(service):
            assert source.exists(), f"{name}: mounts {source} at {target}, which does not exist"
            checked += 1
    for name, secret in (compose().get("secrets") or {}).items():
        if "file" in secret:
            assert (ROOT / secret["file"]).is_file(), f"secret {name}: {secret['file']} does not exist"
    assert checked >= 5


def test_prometheus_and_grafana_read_the_files_of_deploy() -> None:
    prometheus = services()["prometheus"]
    config = next(arg.split("=", 1)[1] for arg in command(prometheus) if arg.startswith("--config.file="))
    assert host_path(prometheus, config) == PROMETHEUS_FILE

    grafana = services()["grafana"]
    assert host_path(grafana, "/etc/grafana/provisioning/datasources") == DATASOURCES_DIR
    assert host_path(grafana, "/etc/grafana/provisioning/dashboards") == DASHBOARD_PROVIDERS_DIR
    providers = [
        provider
        for path in sorted(DASHBOARD_PROVIDERS_DIR.glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    ]
    assert providers, "no dashboard provider"
    for provider in providers:
        folder = host_path(grafana, provider["options"]["path"])
        assert folder is not None and folder.is_dir(), (
            f"provider path {provider['options']['path']} is not mounted"
        )
        assert DASHBOARD_FILE in folder.glob("*.json")
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert host_path(grafana, home) == DASHBOARD_FILE


def test_worker_metrics_ports_are_the_prometheus_targets() -> None:
    found = workers()
    assert {"worker-transactions", "worker-sensors"} <= set(found), f"workers: {found}"
    targets = {(host, port) for _job, host, port in scrape_targets()}
    for name, port in found.items():
        assert (name, port) in targets, f"Prometheus does not scrape {name}:{port}"
        probe = json.dumps(services()[name]["healthcheck"]["test"])
        assert f":{port}/metrics" in probe, f"{name}'s healthcheck does not probe its metrics port {port}"
    for name, service in services().items():
        if name in found:
            args = next(a for a in streamwarden_invocations(service) if a[:1] == ["run"])
            assert option(args, "--domain") in ("transactions", "sensors", "all")


def test_every_prometheus_target_is_a_compose_service_on_a_port_it_serves() -> None:
    serving: dict[str, set[int]] = {name: {port} for name, port in workers().items()}
    for name in consoles():
        serving[name] = {int(environment(services()[name])["STREAMWARDEN_CONSOLE__PORT"])}
    serving["localhost"] = {9090}  # Prometheus itself
    for job, host, port in scrape_targets():
        assert host in serving, f"{job}: target {host} is no compose service that serves metrics"
        assert port in serving[host], f"{job}: {host} serves metrics on {serving[host]}, not {port}"


def test_console_port_and_token_agree_across_compose_prometheus_and_settings(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert consoles() == ["console"]
    console = services()["console"]
    env = environment(console)
    port = int(env["STREAMWARDEN_CONSOLE__PORT"])
    assert env["STREAMWARDEN_CONSOLE__HOST"] == "0.0.0.0", (
        "inside its container the console listens everywhere"
    )
    assert port in published_container_ports(console)
    assert ("console", port) in {(host, p) for _job, host, p in scrape_targets()}
    assert f":{port}/metrics" in json.dumps(console["healthcheck"]["test"])

    # Prometheus sends the same token: the compose secret it mounts comes from the variable the console reads.
    job = next(
        job
        for job in prometheus_config()["scrape_configs"]
        if any(host == "console" for j, host, _p in scrape_targets() if j == job["job_name"])
    )
    secret_file = PurePosixPath(job["authorization"]["credentials_file"])
    assert secret_file.parent == PurePosixPath("/run/secrets")
    assert secret_file.name in services()["prometheus"].get("secrets", [])
    source = compose()["secrets"][secret_file.name]["environment"]
    assert variables_named(
        raw_compose()["services"]["console"]["environment"]["STREAMWARDEN_CONSOLE__TOKEN"]
    ) == {source}

    from pipeline.settings import Settings, load_settings

    assert Settings.model_fields["console"].default.port == port, (
        "compose moved the console off its default port"
    )
    for key, value in env.items():
        clean_env.setenv(key, value)
    settings = load_settings()
    assert settings.console.port == port
    assert settings.console.host == "0.0.0.0"


def test_kafka_and_redis_addresses_are_the_compose_services() -> None:
    kafka = environment(services()["kafka"])
    listeners = dict(re.findall(r"(\w+)://([^,]*)", kafka["KAFKA_LISTENERS"]))
    advertised = dict(re.findall(r"(\w+)://([^,]*)", kafka["KAFKA_ADVERTISED_LISTENERS"]))
    redis_args = command(services()["redis"])
    redis_port = int(option(redis_args, "--port") or 6379)
    users = 0
    for name, service in services().items():
        env = environment(service)
        if "STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS" in env:
            users += 1
            for address in env["STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS"].split(","):
                host, port = address.rsplit(":", 1)
                assert host in services(), f"{name}: Kafka host {host} is no compose service"
                # the listener on that port must advertise this very address, or clients are sent elsewhere
                listener = [lname for lname, where in listeners.items() if where.rsplit(":", 1)[1] == port]
                assert listener, f"{name}: Kafka listens on no port {port} ({listeners})"
                assert advertised.get(listener[0]) == address, (
                    f"{name}: Kafka advertises {advertised.get(listener[0])} on {listener[0]}, clients use {address}"
                )
                assert "kafka" in service.get("depends_on", {}), f"{name} does not wait for Kafka"
        if "STREAMWARDEN_REDIS__URL" in env:
            url = urlsplit(env["STREAMWARDEN_REDIS__URL"])
            assert url.hostname in services() and url.hostname == "redis", (
                f"{name}: Redis host {url.hostname}"
            )
            assert (url.port or 6379) == redis_port, (
                f"{name}: Redis port {url.port}, the server's {redis_port}"
            )
    assert users >= 4


@pytest.mark.parametrize("env", list(env_sets()))
def test_every_streamwarden_variable_is_accepted_by_the_settings(
    env: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    from pipeline.settings import OTHER_ENV_VARS, load_settings

    assert env
    for key, value in env.items():
        clean_env.setenv(key, value)
    settings = load_settings()  # raises ConfigError on an unknown variable or a bad value
    for key, value in env.items():
        if key in OTHER_ENV_VARS:
            continue
        assert str(settings_value(settings, key)) == value, f"{key}={value} did not reach the settings"


def test_streamwarden_variables_the_user_sets_are_settings_names(clean_env: pytest.MonkeyPatch) -> None:
    """A shell that exports what compose asks for must still run `streamwarden` commands on the host."""
    from pipeline.settings import load_settings

    asked = sorted(name for name in variables_named(raw_compose()) if name.startswith("STREAMWARDEN_"))
    assert asked == ["STREAMWARDEN_CONSOLE__TOKEN"]
    for name in asked:
        clean_env.setenv(name, USER_ENV.get(name, "x"))
    load_settings()


def test_streamwarden_commands_in_compose_exist_in_the_cli() -> None:
    import typer

    from pipeline.cli import app

    group = typer.main.get_command(app)  # a click group (typer's own copy of click in typer >= 0.17)
    assert "run" in group.commands
    invocations = [
        (name, args) for name, service in services().items() for args in streamwarden_invocations(service)
    ]
    assert len(invocations) >= 6, invocations
    checked = 0
    for name, args in invocations:
        if args[0] == "console" and "console" not in group.commands:
            continue  # checked once the console lands (test_console_... names it too)
        sub = group.commands.get(args[0])
        assert sub is not None, f"{name}: no command `streamwarden {args[0]}`"
        sub.make_context(args[0], list(args[1:]))  # a UsageError on an unknown option or a bad value
        checked += 1
    assert checked >= 5


def test_long_running_services_have_healthchecks_and_dependencies_wait_for_them() -> None:
    svcs = services()
    for name, service in svcs.items():
        if service.get("restart", "no") != "no":
            check = service.get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in svcs, f"{name} depends on unknown {dependency}"
            if condition.get("condition") == "service_healthy":
                assert svcs[dependency].get("healthcheck"), (
                    f"{name} waits for {dependency}'s health: it has none"
                )
            if not service.get("profiles"):
                assert not svcs[dependency].get("profiles"), (
                    f"{name} (always on) depends on profiled {dependency}"
                )
    assert {
        "kafka",
        "redis",
        "worker-transactions",
        "worker-sensors",
        "console",
        "prometheus",
        "grafana",
    } <= set(svcs)
    assert svcs["simulator"].get("profiles") == ["demo"]


def test_state_lives_on_named_volumes() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for volume, _target in named_volume_mounts(service):
            assert volume in declared, f"{name} mounts undeclared volume {volume}"
    for name in workers():
        service = services()[name]
        state_dir = PurePosixPath(
            environment(service).get("STREAMWARDEN_RUNNER__STATE_DIR")
            or dockerfile_env()["STREAMWARDEN_RUNNER__STATE_DIR"]
        )
        assert any(
            state_dir == target or target in state_dir.parents
            for _volume, target in named_volume_mounts(service)
        ), f"{name}: state dir {state_dir} is on no named volume"


def test_gpu_profile_builds_cuda_torch_and_reserves_a_gpu() -> None:
    svcs = services()
    gpu = [name for name, service in svcs.items() if "gpu" in (service.get("profiles") or [])]
    assert gpu, "no service in the gpu profile"
    declared_args = {
        line.split()[1].split("=")[0] for line in dockerfile_lines() if line.upper().startswith("ARG ")
    }
    for name, service in svcs.items():
        build = service.get("build")
        if isinstance(build, dict):
            unknown = set(build.get("args") or {}) - declared_args
            assert not unknown, f"{name} passes build args the Dockerfile does not declare: {unknown}"
            index = build["args"]["TORCH_INDEX_URL"]
            if name in gpu:
                assert re.search(r"/whl/cu\d+$", index), f"{name} builds torch from {index}"
            else:
                assert index.endswith("/whl/cpu"), f"{name} builds torch from {index}"
    for name in gpu:
        service = svcs[name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in device.get("capabilities", []) for device in devices), f"{name} reserves no GPU"
        assert environment(service).get("STREAMWARDEN_RUNNER__DEVICE", "").startswith("cuda")
        assert service["image"] != svcs["worker-transactions"]["image"], "the CUDA image needs its own tag"
    default = re.search(r"ARG TORCH_INDEX_URL=(\S+)", DOCKERFILE.read_text(encoding="utf-8"))
    assert default and default.group(1).endswith("/whl/cpu"), "a plain `docker build` must give the CPU image"
    assert any('--index-url "${TORCH_INDEX_URL}"' in line for line in dockerfile_lines())


# ------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set()
    for line in dockerfile_lines():
        words = line.split()
        if words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
            copied |= {w.rstrip("/") for w in words[1:-1] if not w.startswith("--")}
    missing = (packages | {"pyproject.toml", project["project"]["readme"]}) - copied
    assert not missing, f"the Dockerfile does not COPY {sorted(missing)}"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        hits = [pattern for pattern in ignored if fnmatch(source, pattern) and not pattern.startswith("!")]
        assert not hits, f".dockerignore {hits} leaves {source} out of the build context"
    assert any(fnmatch(".venv", pattern) for pattern in ignored), (
        ".venv (GBs) would go into the build context"
    )


# ------------------------------------------------------------------------------------- Prometheus + Grafana


def test_dashboard_queries_name_only_metrics_and_labels_the_workers_export() -> None:
    series = exposed_series()
    labels = target_labels()
    # the checker itself: a misspelt metric and a label the metric lacks are both caught
    assert (
        len(query_problems("sum by (domian) (rate(streamwarden_event_total[5m]))", "", series, labels)) == 1
    )
    assert query_problems('sum by (reason) (streamwarden_events_total{domain="x"})', "", series, labels)
    assert query_problems("max by (topic) (streamwarden_consumer_lag)", "{{domain}}", series, labels)
    assert not query_problems(
        "sum by (le, domain) (rate(streamwarden_event_to_alert_seconds_bucket"
        '{domain=~"$domain"}[$__rate_interval]))',
        "{{domain}}",
        series,
        labels,
    )

    problems, queries = [], 0
    for panel in dashboard_panels():
        for target in panel.get("targets") or []:
            queries += 1
            problems += [
                f"{panel['title']}: {p}"
                for p in query_problems(target["expr"], target.get("legendFormat", ""), series, labels)
            ]
    for variable in dashboard().get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((\w+)\s*,\s*(\w+)\)", query or "")
        assert match, f"variable {variable['name']}: expected label_values(metric, label), got {query!r}"
        problems += query_problems(match.group(1), "{{" + match.group(2) + "}}", series, labels)
    assert queries >= len(REQUIRED_PANELS)
    assert not problems, "\n".join(problems)


def test_dashboard_has_the_operator_panels() -> None:
    panels = {panel["title"]: panel for panel in dashboard_panels()}
    missing = set(REQUIRED_PANELS) - set(panels)
    assert not missing, f"dashboard lacks panels {sorted(missing)}"
    for title, wanted in REQUIRED_PANELS.items():
        queried = set().union(*(promql_references(t["expr"])[0] for t in panels[title]["targets"]))
        assert wanted <= queried, f"panel {title!r} queries {sorted(queried)}, not {sorted(wanted)}"
    latency = " ".join(t["expr"] for t in panels["Event-to-alert latency p50/p99"]["targets"])
    assert "histogram_quantile(0.5," in latency and "histogram_quantile(0.99," in latency
    assert "histogram_quantile(" in panels["Batch latency"]["targets"][0]["expr"]
    assert len({panel["id"] for panel in dashboard()["panels"]}) == len(dashboard()["panels"])


def test_dashboard_uses_the_provisioned_prometheus_datasource() -> None:
    source = provisioned_datasource()
    uids = set()
    for panel in dashboard_panels():
        uids.add(panel["datasource"]["uid"])
        uids |= {target["datasource"]["uid"] for target in panel["targets"]}
    for variable in dashboard()["templating"]["list"]:
        uids.add(variable["datasource"]["uid"])
    assert uids == {source["uid"]}, f"dashboard datasources {uids}, provisioned {source['uid']}"
    url = urlsplit(source["url"])
    prometheus = services()["prometheus"]
    listen = next(
        (a.split("=", 1)[1] for a in command(prometheus) if a.startswith("--web.listen-address=")),
        "0.0.0.0:9090",
    )
    assert url.hostname == "prometheus" and url.port == int(listen.rsplit(":", 1)[1])
    assert f":{url.port}/" in json.dumps(prometheus["healthcheck"]["test"])


def test_operations_doc_explains_every_panel() -> None:
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    missing = [panel["title"] for panel in dashboard_panels() if panel["title"] not in text]
    assert not missing, f"docs/operations.md does not explain {missing}"
    for needed in (
        "--profile demo",
        "--profile gpu",
        "STREAMWARDEN_CONSOLE__TOKEN",
        "tests/unit/test_deploy.py",
    ):
        assert needed in text, f"docs/operations.md does not mention {needed}"
