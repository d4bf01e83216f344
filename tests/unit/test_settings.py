"""Settings: sources and precedence, unknown keys named, cross-field checks, secrets masked, `config show`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.settings import load_settings, mask_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("STREAMWARDEN_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamwarden.yaml"
    path.write_text(text)
    return path


def test_unknown_key_in_the_file_is_rejected_with_its_name(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap_servers: b:9092\n  boostrap: typo\n")
    with pytest.raises(ConfigError, match=r"kafka\.boostrap"):
        load_settings(path)


def test_unknown_section_and_unknown_nested_env_var_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="'kafak'"):
        load_settings(write(tmp_path, "kafak: {}\n"))
    monkeypatch.setenv("STREAMWARDEN_RUNNER__MAX_RECORS", "5")
    with pytest.raises(ConfigError, match=r"runner\.max_recors"):
        load_settings()


def test_env_beats_file_beats_shorthand_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap_servers: file:9092\n  group_id: from-file\nrunner:\n  max_records: 10\n")
    monkeypatch.setenv("STREAMWARDEN_KAFKA", "shorthand:9092")
    monkeypatch.setenv("STREAMWARDEN_KAFKA__GROUP_ID", "from-env")
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "file:9092"
    assert settings.kafka.group_id == "from-env"
    assert settings.runner.max_records == 10
    assert settings.runner.poll_timeout_ms == 500
    assert load_settings().kafka.bootstrap_servers == "shorthand:9092"


def test_config_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWARDEN_CONFIG", str(write(tmp_path, "runner:\n  domain: all\n")))
    assert load_settings().domains() == ["transactions", "sensors"]


def test_wrong_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"runner\.max_records"):
        load_settings(runner={"max_records": 0})
    with pytest.raises(ConfigError, match=r"runner\.domain"):
        load_settings(write(tmp_path, "runner:\n  domain: payments\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.sasl_mechanism is required"):
        load_settings(kafka={"security_protocol": "SASL_SSL"})
    with pytest.raises(ConfigError, match="sasl_plain_password"):
        load_settings(kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                             "sasl_plain_username": "svc"})
    with pytest.raises(ConfigError, match="backoff_initial_s"):
        load_settings(runner={"backoff_initial_s": 10, "backoff_max_s": 1})
    with pytest.raises(ConfigError, match="champion"):
        load_settings(transactions={"detector": "mlp_classifier", "challengers": ["mlp_classifier"]})


def test_kafka_security_settings_pass_straight_through_to_kafka_python(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    settings = load_settings(kafka={
        "bootstrap_servers": "broker:9093", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc", "sasl_plain_password": "s3cret", "ssl_cafile": str(ca),
    })
    config = settings.kafka.client_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "svc"
    assert config["sasl_plain_password"] == "s3cret"
    assert config["ssl_cafile"] == str(ca)
    assert settings.kafka.consumer_config()["group_id"] == "streamwarden"
    # the broker answers a fetch of the quiet labels topic within 10 ms, so it never holds back the events
    assert settings.kafka.consumer_config()["fetch_max_wait_ms"] == 10
    assert settings.kafka.consumer_config()["fetch_min_bytes"] == 65_536


def test_secrets_are_masked_everywhere_they_are_shown() -> None:
    settings = load_settings(
        kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_plain_username": "svc",
               "sasl_plain_password": "kafka-pw"},
        redis={"url": "rediss://alerts:redis-pw@cache:6380/2"},
    )
    shown = settings.to_yaml() + repr(settings) + str(settings.masked())
    assert "kafka-pw" not in shown and "redis-pw" not in shown
    assert "rediss://alerts:**********@cache:6380/2" in shown
    assert settings.redis.url.get_secret_value() == "rediss://alerts:redis-pw@cache:6380/2"
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.runner.max_records = 3  # type: ignore[misc]


def test_config_show_prints_the_effective_config_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWARDEN_REDIS__URL", "redis://:hunter2@r:6379/0")
    monkeypatch.setenv("STREAMWARDEN_RUNNER__DOMAIN", "sensors")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert "domain: sensors" in result.output
    assert "redis://:**********@r:6379/0" in result.output


def test_a_wrong_setting_stops_start_up_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWARDEN_RUNNER__DOMAIN", "everything")
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2
    assert "runner.domain" in result.output


def test_detector_params_from_environment_variables_are_read_as_values(monkeypatch) -> None:
    monkeypatch.setenv("STREAMWARDEN_TRANSACTIONS__PARAMS__DENSE_AUTOENCODER__HIDDEN", "[8, 4]")
    monkeypatch.setenv("STREAMWARDEN_TRANSACTIONS__PARAMS__DENSE_AUTOENCODER__LR", "0.01")
    params = load_settings().transactions.params
    assert params["dense_autoencoder"] == {"hidden": [8, 4], "lr": 0.01}


def test_env_var_naming_no_section_is_rejected_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWARDEN_KAFKAA__X", "1")
    with pytest.raises(ConfigError, match=r"STREAMWARDEN_KAFKAA__X: no settings section 'kafkaa' \(sections: kafka, "):
        load_settings()
    monkeypatch.delenv("STREAMWARDEN_KAFKAA__X")
    monkeypatch.setenv("streamwarden_redis_urll", "redis://r:6379/0")  # case-insensitive, like the settings
    with pytest.raises(ConfigError, match="streamwarden_redis_urll.*STREAMWARDEN_REDIS_URL"):
        load_settings()


def test_shorthands_and_tool_variables_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import OTHER_ENV_VARS

    for name in OTHER_ENV_VARS:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("STREAMWARDEN_CONFIG", str(write(tmp_path, "runner:\n  max_records: 9\n")))
    monkeypatch.setenv("STREAMWARDEN_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("STREAMWARDEN_MODEL_SYNC__ENABLED", "true")
    settings = load_settings()
    assert settings.runner.max_records == 9 and settings.model_sync.enabled and settings.kafka.bootstrap_servers == "1"
