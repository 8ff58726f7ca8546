"""Settings: defaults, TOML, environment, and one-line errors for every mistake."""

from __future__ import annotations

import pytest

from streams.config import load_settings
from streams.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MSLI_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


def test_defaults_are_sensible() -> None:
    s = load_settings()
    assert s.bootstrap_servers is None
    assert s.window_ms == 3_600_000
    assert s.top_k_segments == 16
    assert s.late_events == "reopen"


def test_environment_overrides_toml_and_kafka_settings_pass_through(tmp_path, monkeypatch) -> None:
    config = tmp_path / "msli.toml"
    config.write_text(
        'window_seconds = 600\ngroup_id = "from-file"\n[kafka]\n"security.protocol" = "SASL_SSL"\n'
    )
    monkeypatch.setenv("MSLI_GROUP_ID", "from-env")
    monkeypatch.setenv("MSLI_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    s = load_settings(config)
    assert s.window_seconds == 600 and s.group_id == "from-env"
    client = s.kafka_client_config()
    assert client["bootstrap.servers"] == "broker:9092"
    assert client["sasl.mechanism"] == "SCRAM-SHA-512"


def test_unknown_environment_setting_is_refused_with_a_hint(monkeypatch) -> None:
    monkeypatch.setenv("MSLI_WINDOW_SECOND", "60")
    with pytest.raises(ConfigError, match=r"unknown setting MSLI_WINDOW_SECOND .*MSLI_WINDOW_SECONDS"):
        load_settings()


def test_unknown_toml_key_and_bad_values_are_one_line_errors(tmp_path, monkeypatch) -> None:
    config = tmp_path / "msli.toml"
    config.write_text("windw_seconds = 600\n")
    with pytest.raises(ConfigError, match="unknown setting windw_seconds"):
        load_settings(config)
    monkeypatch.setenv("MSLI_MAX_EVENTS_PER_SEGMENT", "zero")
    with pytest.raises(ConfigError, match="bad setting max_events_per_segment") as info:
        load_settings()
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_disabling_tls_verification_needs_explicit_permission(monkeypatch) -> None:
    monkeypatch.setenv("MSLI_KAFKA__ENABLE_SSL_CERTIFICATE_VERIFICATION", "false")
    with pytest.raises(ConfigError, match="allow_insecure_kafka"):
        load_settings()
    monkeypatch.setenv("MSLI_ALLOW_INSECURE_KAFKA", "true")
    assert load_settings().kafka["enable.ssl.certificate.verification"] == "false"


def test_kafka_client_config_needs_a_broker() -> None:
    with pytest.raises(ConfigError, match="MSLI_BOOTSTRAP_SERVERS"):
        load_settings().kafka_client_config()


def test_live_consumers_wait_briefly_at_the_broker_unless_the_pass_through_says_otherwise(tmp_path) -> None:
    from streams.consuming import prompt_consumer_config

    s = load_settings(bootstrap_servers="broker:9092", fetch_wait_ms=20)
    config = prompt_consumer_config(s, **{"group.id": "g"})
    assert config["fetch.wait.max.ms"] == 20 and config["group.id"] == "g"
    assert config["bootstrap.servers"] == "broker:9092"
    path = tmp_path / "msli.toml"
    path.write_text('bootstrap_servers = "broker:9092"\n[kafka]\n"fetch.wait.max.ms" = "300"\n')
    assert prompt_consumer_config(load_settings(path))["fetch.wait.max.ms"] == "300"
