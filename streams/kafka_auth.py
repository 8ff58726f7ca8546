"""Give faust's aiokafka clients the same SASL and TLS settings the librdkafka clients get.

Users write librdkafka settings once (`MSLI_KAFKA__SECURITY_PROTOCOL=SASL_SSL`, a `[kafka]` table);
confluent-kafka takes them as they are, but faust's consumer is aiokafka, which wants a credentials
object and an `ssl.SSLContext`. This module translates the settings that matter for security and
refuses the ones it cannot honour, so the encoder stage never connects with less protection than
the segmenter does.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from streams.config import INSECURE_KAFKA
from streams.errors import ConfigError

__all__ = ["faust_credentials", "ssl_context"]

_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
# Security settings this module translates; any other ssl.* or sasl.* setting is refused.
_TRANSLATED = {
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",  # librdkafka's older spelling
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "enable.ssl.certificate.verification",
    "ssl.endpoint.identification.algorithm",
}


def faust_credentials(kafka: Mapping[str, str]) -> CredentialsT | None:
    """Credentials for faust's `broker_credentials` from librdkafka settings; None for PLAINTEXT."""
    unknown = sorted(k for k in kafka if k.startswith(("ssl.", "sasl.")) and k not in _TRANSLATED)
    if unknown:
        raise ConfigError(
            f"kafka setting {unknown[0]} cannot be passed to the encoder stage's client (aiokafka); "
            "use PEM files: ssl.ca.location, ssl.certificate.location, ssl.key.location"
        )
    protocol = kafka.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"kafka security.protocol={protocol} is not one of {', '.join(sorted(_PROTOCOLS))}")
    context = ssl_context(kafka) if protocol in {"SSL", "SASL_SSL"} else None
    if protocol == "SSL":
        return SSLCredentials(context)
    if protocol == "PLAINTEXT":
        return None
    mechanism = kafka.get("sasl.mechanism", kafka.get("sasl.mechanisms", "PLAIN")).upper()
    if mechanism not in _MECHANISMS:
        raise ConfigError(
            f"kafka sasl.mechanism={mechanism} is not supported by the encoder stage's client; "
            f"use one of {', '.join(sorted(_MECHANISMS))}"
        )
    return SASLCredentials(
        username=kafka.get("sasl.username"),
        password=kafka.get("sasl.password"),
        mechanism=mechanism,
        ssl_context=context,
    )


def ssl_context(kafka: Mapping[str, str]) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name, as librdkafka does.

    Verification is off only where the settings turn it off, which MsliSettings allows only with
    `allow_insecure_kafka=true`.
    """
    try:
        context = ssl.create_default_context(cafile=kafka.get("ssl.ca.location"))
        if "ssl.certificate.location" in kafka:
            context.load_cert_chain(
                kafka["ssl.certificate.location"],
                kafka.get("ssl.key.location"),
                kafka.get("ssl.key.password"),
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"kafka TLS files cannot be used: {exc}") from None
    off = {k for k, values in INSECURE_KAFKA.items() if kafka.get(k, "").strip().lower() in values}
    if off:
        context.check_hostname = False
    if "enable.ssl.certificate.verification" in off:
        context.verify_mode = ssl.CERT_NONE
    return context
