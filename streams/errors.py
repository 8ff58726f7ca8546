"""Errors of the streams package: each one is a one-line message a user can act on."""


class StreamsError(Exception):
    """Root of every error the streams package raises on purpose."""


class ConfigError(StreamsError):
    """A setting is unknown, malformed or names something unreachable."""


class InputFileError(StreamsError):
    """A file of behaviour events cannot be read; the message names path:line."""


class BrokerError(StreamsError):
    """A Kafka broker cannot be started or reached, or refused a request."""


class DeliveryError(StreamsError):
    """Kafka did not acknowledge records the worker must not lose."""


class StateError(StreamsError):
    """The worker's local state (RocksDB) cannot be written; it stops rather than lose data."""
