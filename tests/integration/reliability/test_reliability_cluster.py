"""The broker stalls; workers come and go. The worker waits a stall out and says so; a group that
grows and shrinks (one member stopped cleanly, one SIGKILLed) ends equal to the oracle."""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import pytest
from harness import MIN, Worker, produce_steadily, total_applied, wait_for
from oracle import Rules

from streams.broker import LocalBroker
from streams.synthetic import generate

RULES = Rules(window_ms=60 * MIN, lateness_ms=5_000, idle_ms=30 * MIN, max_events=8)
STALL_SECONDS = 20


def test_a_stalled_broker_is_waited_out_and_reported(make_pipeline, figures, tmp_path) -> None:
    # A broker of its own: freezing the shared one would stall every other test.
    with LocalBroker(log_path=tmp_path / "stalled-broker.log") as broker:
        pipeline = make_pipeline(RULES, bootstrap=broker.bootstrap_servers)
        events = generate(n_users=200, n_events=2_000, seed=31).to_dicts()
        port = _free_port()
        worker = pipeline.start_worker("w", MSLI_METRICS_PORT=str(port))
        pipeline.wait_assigned(worker)
        producer = produce_steadily(pipeline, events, seconds=STALL_SECONDS + 4)
        wait_for(lambda: total_applied(pipeline, worker.state_dir) > 0, 120, "first progress")
        with broker.paused():
            time.sleep(STALL_SECONDS)
            assert worker.alive
            stalled_at = total_applied(pipeline, worker.state_dir)
        resumed = time.monotonic()
        wait_for(
            lambda: total_applied(pipeline, worker.state_dir) > stalled_at,
            120,
            "progress after the stall",
            0.25,
        )
        resume_s = time.monotonic() - resumed
        metrics = wait_for(lambda: _stalls_metric(port), 60, "the stall in /metrics")
        producer.join(timeout=300)
        pipeline.add_drain_events()
        pipeline.wait_drained([worker])
        assert worker.stop() == 0, worker.log()[-3000:]
        pipeline.assert_equal_to_oracle(worker.state_dir)
    log = worker.log()
    stalls = re.findall(r"Kafka stalled: a checkpoint took ([\d.]+) s", log)
    assert stalls, log[-3000:]
    counted = [int(n) for n in re.findall(r"(\d+) stalls", log)]
    assert counted and counted[-1] >= 1  # the status line counts it, and so does /metrics:
    assert metrics["msli_kafka_stalls_total"] >= 1 and metrics["msli_kafka_stalled_seconds_total"] > 5
    figures(
        f"broker frozen {STALL_SECONDS} s (SIGSTOP): worker alive, logged stalls of {', '.join(stalls)} s; "
        f"store progress {resume_s:.1f} s after SIGCONT; state equal to the oracle"
    )


@pytest.mark.parametrize(
    ("added", "n_events"),
    [pytest.param(1, 4_000, id="short"), pytest.param(2, 12_000, id="full", marks=pytest.mark.slow)],
)
def test_scale_out_and_back_ends_equal_to_the_oracle(make_pipeline, figures, added, n_events) -> None:
    """One worker; `added` more join while events flow; then the last one is SIGKILLed and (full
    run) the one before it stops cleanly; the first ends alone, owning everything."""
    pipeline = make_pipeline(RULES, partitions=6)
    events = generate(n_users=400, n_events=n_events, seed=41).to_dicts()
    first = pipeline.start_worker("w1")
    pipeline.wait_assigned(first)
    producer = produce_steadily(pipeline, events, seconds=10 + 10 * added)
    time.sleep(3)
    grown = time.time()
    joined = [pipeline.start_worker(f"w{2 + k}") for k in range(added)]
    for w in joined:
        pipeline.wait_assigned(w)
    wait_for(lambda: first.logged_at("revoked "), 120, "w1 to give partitions up")
    scale_out_s = max(max(w.logged_at("assigned ")) for w in joined) - grown
    time.sleep(4)
    *stopped, killed_worker = joined
    for w in stopped:
        assert w.stop() == 0, w.log()[-3000:]  # leaves the group cleanly
        time.sleep(1)
    killed = time.time()
    killed_worker.kill()
    # The survivor owns every partition again once the group notices the dead member.
    everything = r"assigned .*\[0,1,2,3,4,5\]"
    wait_for(lambda: [t for t in first.logged_at(everything) if t > killed], 120, "w1 to own all")
    back_s = max(first.logged_at(everything)) - killed
    producer.join(timeout=300)
    pipeline.add_drain_events()
    pipeline.wait_drained([first])
    assert first.alive and "Traceback" not in first.log()  # no crash, no crash loop
    assert first.stop() == 0, first.log()[-3000:]
    expected = pipeline.assert_equal_to_oracle(first.state_dir)
    # A member that left still holds the right state for every partition it had fully applied.
    users = pipeline.users_by_segments_partition()
    ends = pipeline.log_ends("segments")
    for w in joined:
        applied = pipeline.applied(w.state_dir)
        done = set().union(*(users[p] for p in users if applied[p] >= ends[p] - 1))
        if done:
            assert pipeline.store_problems(expected, w.state_dir, done) == []
    pauses = _pauses(first)
    how = "one SIGTERM, one SIGKILL" if stopped else "SIGKILL"
    figures(
        f"1 -> {1 + added} workers: new members had partitions {scale_out_s:.1f} s after start (process "
        f"start included); back to 1 ({how}): survivor owned all partitions {back_s:.1f} s after the "
        f"kill; survivor's revoke-to-assign pauses {', '.join(f'{p:.1f}' for p in pauses)} s; "
        "state equal to the oracle"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stalls_metric(port: int) -> dict[str, float] | None:
    """The worker's /metrics once it counts a stall; None before."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {m[0]: float(m[1]) for m in re.findall(r"^(msli_kafka_\S+) (\S+)$", text, re.MULTILINE)}
    return found if found.get("msli_kafka_stalls_total", 0) >= 1 else None


def _pauses(worker: Worker) -> list[float]:
    """Seconds between each 'revoked' and the next 'assigned' in a worker's log."""
    revoked, assigned = worker.logged_at("revoked "), worker.logged_at("assigned ")
    return [min(a for a in assigned if a >= r) - r for r in revoked if any(a >= r for a in assigned)]
