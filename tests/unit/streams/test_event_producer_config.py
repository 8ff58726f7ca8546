"""The event producer batches longer than librdkafka's default, unless the application says otherwise."""

from streams.producer import EVENT_LINGER_MS, event_producer_config


def test_events_linger_longer_than_librdkafkas_default_with_the_safe_defaults_kept() -> None:
    config = event_producer_config({"bootstrap.servers": "b:9092"})
    assert config["linger.ms"] == EVENT_LINGER_MS > 5
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["bootstrap.servers"] == "b:9092"


def test_an_applications_own_linger_wins() -> None:
    assert event_producer_config({"bootstrap.servers": "b:9092", "linger.ms": 0})["linger.ms"] == 0
