"""`msli store sync` keeps a local replica that follows the representations topic and the control
topic; `store.open_replica(path).get(user)` reads it while the sync writes."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
from msli_processes import MSLI, msli_env, wait_for

from schemas import AvroCodec
from store import StoredSegment, open_replica
from streams.fuser import representation_record
from streams.publisher import KafkaPublisher, producer_config

CODEC = AvroCodec("UserRepresentation")


def rep(user: str, version: str, t: int) -> bytes:
    vector = np.random.default_rng(t).standard_normal(4).astype(np.float32)
    segment = StoredSegment(user, t, t + 10, 0, t + 5, 1, vector)
    return CODEC.encode(representation_record(user, version, [segment], 1000.0))


def test_replica_follows_the_topic_and_the_promotions(
    kafka_bootstrap: str, create_topic: Callable[..., str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    reps = create_topic("representations", partitions=3, config={"cleanup.policy": "compact"})
    control = create_topic("control", partitions=1, config={"cleanup.policy": "compact"})
    env = msli_env(
        MSLI_BOOTSTRAP_SERVERS=kafka_bootstrap,
        MSLI_REPRESENTATIONS_TOPIC=reps,
        MSLI_CONTROL_TOPIC=control,
        MSLI_GROUP_ID=unique_name("group"),
        MSLI_STATE_DIR=str(tmp_path / "no-worker-here"),
    )
    publisher = KafkaPublisher(producer_config({"bootstrap.servers": kafka_bootstrap}))

    def publish(user: str, version: str, t: int) -> bytes:
        value = rep(user, version, t)
        publisher.send(reps, user.encode(), value)
        publisher.flush()
        return value

    users = [f"u{i}" for i in range(20)]
    for i, user in enumerate(users):
        publish(user, "m-1", 1000 * i)
    replica_dir = tmp_path / "replica"
    log = open(tmp_path / "sync.log", "w")  # noqa: SIM115 - closed below
    sync = subprocess.Popen(
        [MSLI, "store", "sync", str(replica_dir)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: (replica_dir / "CURRENT").exists(), 60, "the replica")
        with open_replica(replica_dir, refresh_seconds=0.0) as replica:
            wait_for(lambda: all(replica.get(u) for u in users), 60, "every user in the replica")
            assert replica.get("u3") == CODEC.decode(rep("u3", "m-1", 3000))
            assert replica.get("nobody") is None

            newer = publish("u3", "m-1", 99_000)  # a fresher representation replaces the old one
            wait_for(lambda: replica.get_bytes("u3") == ("m-1", newer), 30, "the update")

            publish("u3", "m-2", 5)  # a new model's record: kept apart, not served yet
            wait_for(lambda: replica.get("u3", model_version="m-2"), 30, "the new model's record")
            assert replica.get("u3")["model_version"] == "m-1"

            out = subprocess.run([MSLI, "store", "promote", "m-2"], env=env, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            wait_for(lambda: replica.promoted_version() == "m-2", 30, "the promotion")
            assert replica.get("u3")["model_version"] == "m-2"
            assert replica.get("u4") is None  # m-2 has no record for u4 yet: no silent fallback

            out = subprocess.run([MSLI, "store", "drop", "m-1"], env=env, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            wait_for(lambda: replica.model_versions() == ["m-2"], 30, "the drop")
        sync.send_signal(signal.SIGTERM)
        assert sync.wait(30) == 0
    finally:
        if sync.poll() is None:
            sync.kill()
        log.close()
        publisher.close()

    # A restart resumes where the replica stopped: nothing is applied twice.
    out = subprocess.run(
        [MSLI, "store", "sync", str(replica_dir), "--until-caught-up"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "0 representations applied" in out.stdout
