"""The broker stalls; workers come and go. The worker waits a stall out and says so; a group that
grows and shrinks (one member stopped cleanly, one SIGKILLed) ends equal to the oracle."""

from __future__ import annotations

import re
import time

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
        events = generate(n_users=200, n_events=3_000, seed=31).to_dicts()
        worker = pipeline.start_worker("w")
        pipeline.wait_assigned(worker)
        producer = produce_steadily(pipeline, events, seconds=STALL_SECONDS + 6)
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
        producer.join(timeout=300)
        pipeline.add_drain_events()
        pipeline.wait_drained([worker])
        assert worker.stop() == 0, worker.log()[-3000:]
        pipeline.assert_equal_to_oracle(worker.state_dir)
    log = worker.log()
    stalls = re.findall(r"Kafka stalled: a checkpoint took ([\d.]+) s", log)
    assert stalls, log[-3000:]
    counted = [int(n) for n in re.findall(r"(\d+) stalls", log)]
    assert counted and counted[-1] >= 1  # the status line (the worker's metrics) counts it
    figures(
        f"broker frozen {STALL_SECONDS} s (SIGSTOP): worker alive, logged stalls of {', '.join(stalls)} s; "
        f"store progress {resume_s:.1f} s after SIGCONT; state equal to the oracle"
    )


def test_scale_out_and_back_ends_equal_to_the_oracle(make_pipeline, figures) -> None:
    pipeline = make_pipeline(RULES, partitions=6)
    events = generate(n_users=400, n_events=6_000, seed=41).to_dicts()
    first = pipeline.start_worker("w1")
    pipeline.wait_assigned(first)
    producer = produce_steadily(pipeline, events, seconds=30)
    time.sleep(3)
    grown = time.time()
    second, third = pipeline.start_worker("w2"), pipeline.start_worker("w3")
    for w in (second, third):
        pipeline.wait_assigned(w)
    wait_for(lambda: first.logged_at("revoked "), 120, "w1 to give partitions up")
    scale_out_s = max(max(w.logged_at("assigned ")) for w in (second, third)) - grown
    time.sleep(4)
    assert second.stop() == 0, second.log()[-3000:]  # leaves the group cleanly
    time.sleep(1)
    killed = time.time()
    third.kill()
    # The survivor owns every partition again once the group notices the dead member.
    wait_for(
        lambda: [t for t in first.logged_at(r"assigned .*\[0,1,2,3,4,5\]") if t > killed],
        120,
        "w1 to own all",
    )
    back_s = max(first.logged_at(r"assigned .*\[0,1,2,3,4,5\]")) - killed
    producer.join(timeout=300)
    pipeline.add_drain_events()
    pipeline.wait_drained([first])
    assert first.alive and "Traceback" not in first.log()  # no crash, no crash loop
    assert first.stop() == 0, first.log()[-3000:]
    pipeline.assert_equal_to_oracle(first.state_dir)
    # A stopped member's store is still right for every partition it had fully applied.
    expected = pipeline.expected()
    users = pipeline.users_by_segments_partition()
    ends = pipeline.log_ends("segments")
    for w in (second, third):
        applied = pipeline.applied(w.state_dir)
        done = set().union(*(users[p] for p in users if applied[p] >= ends[p] - 1))
        if done:
            assert pipeline.store_problems(expected, w.state_dir, done) == []
    pauses = _pauses(first)
    figures(
        f"1 -> 3 workers: new members had partitions {scale_out_s:.1f} s after start (process start "
        f"included); back to 1 (one SIGTERM, one SIGKILL): survivor owned all partitions {back_s:.1f} s "
        f"after the kill; survivor's revoke-to-assign pauses {', '.join(f'{p:.1f}' for p in pauses)} s; "
        "state equal to the oracle"
    )


def _pauses(worker: Worker) -> list[float]:
    """Seconds between each 'revoked' and the next 'assigned' in a worker's log."""
    revoked, assigned = worker.logged_at("revoked "), worker.logged_at("assigned ")
    return [min(a for a in assigned if a >= r) - r for r in revoked if any(a >= r for a in assigned)]
