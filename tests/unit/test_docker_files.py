"""docker/Dockerfile and docker/compose.yaml, checked by reading them (no Docker engine here):
every msli service runs a real command with real options, and every MSLI_ variable is a real
setting with a valid value."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from streams.cli import cli
from streams.config import load_settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def msli_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image", "").startswith("msli")}


def _split_options(command: click.Command, args: list[str]) -> tuple[list[str], list[str]]:
    """A group's own options (with their values), and what follows them."""
    flags = {o for p in command.params if isinstance(p, click.Option) and p.is_flag for o in p.opts}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 1 if args[i] in flags or "=" in args[i] else 2
    return args[:i], args[i:]


def parse_msli_command(args: list[str]) -> list[str]:
    """Parse argv as `msli` would (raising click.UsageError on anything unknown); return the
    command path, such as ["store", "sync"]."""
    path: list[str] = []
    command: click.Command = cli
    ctx: click.Context | None = None
    rest = list(args)
    while isinstance(command, click.Group):
        own, rest = _split_options(command, rest)
        # The group parses its options and sees a command name (none: a usage error).
        ctx = command.make_context(path[-1] if path else "msli", own + rest[:1], parent=ctx)
        name, rest = rest[0], rest[1:]
        found = command.get_command(ctx, name)
        if found is None:
            raise click.UsageError(f"no such command {name!r}")
        path.append(name)
        command = found
    command.make_context(path[-1], rest, parent=ctx)
    return path


def test_the_command_parser_refuses_what_msli_refuses() -> None:
    assert parse_msli_command(["--log-format", "json", "worker"]) == ["worker"]
    with pytest.raises(click.UsageError):
        parse_msli_command(["wroker"])
    with pytest.raises(click.UsageError):
        parse_msli_command(["serve", "--no-such-option"])


def test_kafka_runs_in_kraft_mode_from_the_official_image(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in yaml.safe_dump(compose).lower()
    listeners = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners["PLAINTEXT"] == "kafka:9092"  # what every msli service bootstraps from
    assert "healthcheck" in kafka


def test_every_msli_service_runs_a_real_command(compose: dict[str, Any]) -> None:
    services = msli_services(compose)
    commands = {name: parse_msli_command(s["command"]) for name, s in services.items()}
    assert commands["topics"] == ["topics"]
    assert sorted(c[0] for c in commands.values()).count("worker") == 2
    assert sorted(c[0] for c in commands.values()).count("serve") == 2
    assert ["produce"] in commands.values()
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith(".") or source in compose["volumes"], f"{name}: volume {source}"


def test_every_msli_variable_is_a_real_setting(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dockerfile_env = dict(re.findall(r"(MSLI_[A-Z_]+)=(\S+)", (DOCKER / "Dockerfile").read_text()))
    assert dockerfile_env, "the Dockerfile sets MSLI_STATE_DIR"
    for name, service in msli_services(compose).items():
        env = {**dockerfile_env, **{k: str(v) for k, v in service.get("environment", {}).items()}}
        for key in [k for k in os.environ if k.startswith("MSLI_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            assert key.startswith("MSLI_"), f"{name}: {key} is not an msli setting"
            monkeypatch.setenv(key, value)
        settings = load_settings()  # raises ConfigError on an unknown setting or a bad value
        assert settings.bootstrap_servers == "kafka:9092", name


def test_each_api_serves_the_store_of_the_worker_it_advertises_for(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for n in (1, 2):
        worker, api = services[f"worker-{n}"], services[f"api-{n}"]
        assert worker["volumes"][0].split(":")[0] == api["volumes"][0].split(":")[0]
        assert worker["environment"]["MSLI_API_URL"] == api["environment"]["MSLI_API_URL"]
        host_port = api["environment"]["MSLI_API_URL"].rsplit(":", 1)[1]
        serve_port = api["command"][api["command"].index("--port") + 1]
        assert f"{host_port}:{serve_port}" in api["ports"]


def test_dockerfile_installs_the_packages_with_a_cpu_default_and_a_cuda_variant() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in text
    assert re.search(r"^\s+cpu\)\s+pip install --index-url \S+/cpu ", text, re.MULTILINE)
    assert re.search(r"^\s+cuda\)\s+pip install ", text, re.MULTILINE)
    pyproject = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())
    for package in pyproject["tool"]["setuptools"]["packages"]:
        assert f"COPY {package} ./{package}" in text
    assert "python -m schemas.build_compiled" in text  # the hot modules, compiled
    assert 'ENTRYPOINT ["msli"]' in text
    assert re.search(r"^USER (?!root)", text, re.MULTILINE)
