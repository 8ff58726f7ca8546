"""The one settings object: defaults, then a TOML file, then `MSLI_*` environment variables."""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streams.errors import ConfigError

__all__ = ["INSECURE_KAFKA", "MsliSettings", "load_settings", "torch_threads"]

_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
_REPO_ROOT = Path(__file__).resolve().parent.parent
_ENV_PREFIX = "MSLI_"
# Variables with the prefix that are not settings but are read elsewhere on purpose.
# MSLI_CRASH_AT is the reliability tests' crash hook (streams/faults.py), inert unless set.
# MSLI_COMPILED=0 runs the hot modules from source instead of their mypyc build (schemas/compiled.py).
_NON_SETTING_ENV = {"MSLI_CONFIG", "MSLI_VENV", "MSLI_CRASH_AT", "MSLI_COMPILED"}
# librdkafka settings that turn off a safety check, with every spelling librdkafka reads as "off";
# refused unless `allow_insecure_kafka` is set.
INSECURE_KAFKA = {
    "enable.ssl.certificate.verification": {"false", "f", "0"},
    "ssl.endpoint.identification.algorithm": {"none"},
}


class MsliSettings(BaseSettings):
    """Every knob of msli. Times are in seconds, sizes in bytes or counts."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )
    _toml_file: ClassVar[Path | None] = None

    # --- Kafka ---------------------------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "bootstrap_servers", "MSLI_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Kafka brokers; unset means `msli demo` starts a local one.",
    )
    kafka: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka client settings passed through unchanged (SASL, TLS, ...).",
    )
    allow_insecure_kafka: bool = False
    events_topic: str = "behaviour-events"
    segments_topic: str = "closed-segments"
    representations_topic: str = "user-representations"
    dead_letter_topic: str = "msli-dead-letters"
    checkpoints_topic: str = "msli-segmenter-checkpoints"
    control_topic: str = Field(
        default="msli-control",
        description="Compacted topic of the promoted model version, versions to drop, and API routes.",
    )
    group_id: str = "msli"
    topic_partitions: int = Field(default=6, ge=1, description="Partitions of topics msli creates.")
    replication_factor: int = Field(default=1, ge=1)
    session_timeout_seconds: float = Field(default=6.0, gt=0)

    # --- Segmentation (the closing rules) ------------------------------------------------------
    window_seconds: float = Field(default=3600.0, gt=0, description="Tumbling event-time window length.")
    allowed_lateness_seconds: float = Field(default=60.0, ge=0)
    user_idle_seconds: float = Field(
        default=1800.0, gt=0, description="Event-time gap that closes a segment."
    )
    max_events_per_segment: int = Field(default=32, ge=1)
    staggered_windows: bool = Field(
        default=True,
        description="Shift each user's windows by a phase from a hash of the user id, so the segments "
        "that window ends close arrive spread over the window instead of all at once; false aligns "
        "every user's windows at multiples of the window length.",
    )
    partition_idle_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Wall-clock quiet time after which a partition's watermark follows the clock.",
    )
    late_events: Literal["reopen", "dead-letter"] = "reopen"
    max_future_seconds: float = Field(
        default=3600.0, ge=0, description="Event times further ahead are bad input."
    )
    max_record_bytes: int = Field(
        default=64 * 1024, ge=128, description="Larger event records are dead-lettered (oversized)."
    )
    max_segments_per_user_window: int = Field(
        default=64,
        ge=1,
        description="Segments one user may have in one window; events beyond are dead-lettered "
        "(segment-cap), so one flooding user costs bounded memory.",
    )

    # --- Worker --------------------------------------------------------------------------------
    consume_batch_size: int = Field(default=5000, ge=1)
    commit_interval_seconds: float = Field(default=2.0, gt=0)
    encode_batch_size: int = Field(default=256, ge=1)
    encode_batch_seconds: float = Field(
        default=0.0,
        ge=0,
        description="How long a micro-batch of closed segments that has its first record waits for "
        "more (up to encode_batch_size); 0 encodes what has arrived. Under load batches fill anyway.",
    )
    fetch_wait_ms: int = Field(
        default=50,
        ge=0,
        description="Longest the worker's consumers wait at the broker for new records (librdkafka "
        "fetch.wait.max.ms). Apache Kafka answers as soon as records arrive, so this only bounds "
        "idle polling; the local broker answers late, so it adds up to this to every hop.",
    )
    top_k_segments: int = Field(default=16, ge=1, description="K: segment vectors kept in a representation.")
    recency_half_life_seconds: float = Field(default=7 * 86400.0, gt=0)
    vector_dtype: Literal["float16", "float32"] = "float16"
    state_dir: Path = Path("msli-state")
    encoder_checkpoint: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # On by default since the encoder stage has a confluent-kafka consumer of its own (the restart
    # hang once seen with it involved faust's consumer, now gone): with it, the crash-at-each-boundary
    # test passed 8 of 8 runs in a row and the reliability and worker integration tests passed, and
    # the worker ran end to end 18-29% faster with a lower freshness p99 on 2 shared cores
    # (docs/performance.md, item 7). False keeps the segmenter a thread of the worker.
    segmenter_process: bool = Field(
        default=True,
        description="Run the segmenter in a child process (a core of its own, since one process holds "
        "one interpreter lock; it dies with the worker, and its failure stops the worker); false: a "
        "thread of the worker process.",
    )
    encoder_process: bool = Field(
        default=True,
        description="On a CPU, run the encoder's forward passes in a child process, a micro-batch apart "
        "from the encoder stage, which merges the next batch and stores the last meanwhile (a core of "
        "its own for the model; it dies with the worker, and its failure stops the worker); false: in "
        "the stage's thread. A GPU encoder always runs in the worker.",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="Intra-op threads for CPU encoding; 0: one per CPU but the one the segmenter needs.",
    )
    status_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the worker logs a status line (open segments, stalls)."
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve the worker's Prometheus /metrics here; unset: off."
    )
    api_url: str | None = Field(
        default=None,
        description="URL of the `msli serve` next to this worker's store; the worker advertises it for "
        "the partitions it owns, so other API processes redirect their users' queries there.",
    )

    # --- Query API (`msli serve`) ----------------------------------------------------------------
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=8080, ge=0, le=65535)
    api_token: str | None = Field(
        default=None, description="Bearer token `msli serve` requires; unset: no authentication."
    )
    max_candidates: int = Field(default=1000, ge=1, description="Candidate items per score request.")
    read_refresh_seconds: float = Field(
        default=0.1, gt=0, description="How stale a read of the worker's store may be."
    )

    # --- Data ----------------------------------------------------------------------------------
    data_dir: Path = _REPO_ROOT.parent / "shared" / "data" / "movielens-100k"

    @field_validator("kafka", mode="before")
    @classmethod
    def _dotted_kafka_keys(cls, value: Any) -> Any:
        # Environment variables cannot hold dots: MSLI_KAFKA__SASL_MECHANISM means sasl.mechanism.
        if isinstance(value, dict):
            return {str(k).replace("_", "."): str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _refuse_insecure_kafka(self) -> MsliSettings:
        for key, off in INSECURE_KAFKA.items():
            value = self.kafka.get(key, "")
            if value.strip().lower() in off and not self.allow_insecure_kafka:
                raise ValueError(
                    f"kafka {key}={value} disables TLS verification; "
                    "set allow_insecure_kafka=true to allow it"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    # --- Derived -------------------------------------------------------------------------------
    def kafka_client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings for a client: the bootstrap servers, the pass-through, then `extra`."""
        if not self.bootstrap_servers:
            raise ConfigError("no Kafka broker configured: set MSLI_BOOTSTRAP_SERVERS")
        # librdkafka logs through Python logging, so its lines obey --log-level and log formats.
        return {"bootstrap.servers": self.bootstrap_servers, "logger": _LIBRDKAFKA_LOG, **self.kafka, **extra}

    @property
    def window_ms(self) -> int:
        return int(self.window_seconds * 1000)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> MsliSettings:
    """Build the settings; every problem becomes one ConfigError line, never a traceback."""
    path = Path(config_file) if config_file else _env_config_file()
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    _reject_unknown_env()

    class _FileSettings(MsliSettings):
        _toml_file = path

    try:
        return _FileSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"config file {path}: {exc}") from None


def _env_config_file() -> Path | None:
    value = os.environ.get("MSLI_CONFIG")
    return Path(value) if value else None


def torch_threads(settings: MsliSettings) -> int:
    """The encoder's intra-op threads. The segmenter needs a core of its own (its process, or its
    thread): with torch on every core, OpenMP's spinning workers and the segmenter preempt each
    other. A worker on 2 busy cores ran 2,873 events/s end to end with 2 threads, 8,341 with 1; with
    the segmenter in its own process, 1,883 with 2 and 11,655 with 1 (docs/performance.md)."""
    return settings.torch_threads or max(1, (os.cpu_count() or 2) - 1)


def _reject_unknown_env() -> None:
    known = {_ENV_PREFIX + name.upper() for name in MsliSettings.model_fields} | _NON_SETTING_ENV
    for name in os.environ:
        if not name.startswith(_ENV_PREFIX) or name in known or name.startswith(_ENV_PREFIX + "KAFKA__"):
            continue
        hint = difflib.get_close_matches(name, sorted(known), n=1)
        raise ConfigError(f"unknown setting {name}" + (f" (did you mean {hint[0]}?)" if hint else ""))


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"unknown setting {where}{more}"
    return f"bad setting {where}: {first['msg']}{more}"
