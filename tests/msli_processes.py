"""What the integration tests share for running `msli` as a user would: the command, an
environment of the test's own, child processes that never outlive their test, and polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["MSLI", "Processes", "msli_env", "quick_worker_env", "topic_env", "wait_for"]

MSLI = str(Path(sys.executable).with_name("msli"))
TOPIC_ROLES = ("events", "segments", "representations", "dead_letter", "checkpoints", "control")


def msli_env(**settings: str) -> dict[str, str]:
    """This process's environment without its MSLI_* settings (a developer's own must not leak
    into a test, nor KAFKA_BOOTSTRAP_SERVERS where a test names its broker), plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSLI_")}
    return {**env, **settings}


def topic_env(unique_name: Callable[[str], str]) -> dict[str, str]:
    """Topics and a consumer group no other test uses, as MSLI_* settings."""
    topics = {f"MSLI_{role.upper()}_TOPIC": unique_name(role.replace("_", "-")) for role in TOPIC_ROLES}
    return {**topics, "MSLI_GROUP_ID": unique_name("group")}


def quick_worker_env(
    bootstrap: str,
    unique_name: Callable[[str], str],
    state_dir: Path,
    *,
    partitions: int,
    window_seconds: int,
    max_events: int,
    **settings: str,
) -> dict[str, str]:
    """A worker on topics of its own, with rules that close segments within a test's minutes: 30 s
    lateness, 5 minutes idle, and a quiet partition following the clock after 2 s; `settings`
    override any of it."""
    env = msli_env(
        **topic_env(unique_name),
        MSLI_BOOTSTRAP_SERVERS=bootstrap,
        MSLI_STATE_DIR=str(state_dir),
        MSLI_TOPIC_PARTITIONS=str(partitions),
        MSLI_WINDOW_SECONDS=str(window_seconds),
        MSLI_ALLOWED_LATENESS_SECONDS="30",
        MSLI_USER_IDLE_SECONDS="300",
        MSLI_MAX_EVENTS_PER_SEGMENT=str(max_events),
        MSLI_PARTITION_IDLE_SECONDS="2",
        MSLI_COMMIT_INTERVAL_SECONDS="0.5",
        MSLI_MAX_FUTURE_SECONDS="86400",
        MSLI_DEVICE="cpu",
    )
    return {**env, **settings}


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll until `condition()` is truthy and return it; generous timeouts, no timing assertions."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Processes:
    """`msli` child processes of one test, each logging to a file in `log_dir`; `close()` kills
    what still runs, so a failed test leaves no worker behind."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{args[0]}-{len(self._running)}.log").open("wb")
        proc = subprocess.Popen([MSLI, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        self._running.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """What `proc` printed so far."""
        for candidate, log in self._running:
            if candidate is proc:
                return Path(log.name).read_text(errors="replace")
        raise KeyError(proc.pid)

    def close(self) -> None:
        for proc, log in self._running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
