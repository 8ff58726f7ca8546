"""SASL and TLS settings reach faust's aiokafka clients as they reach librdkafka's, never weaker."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import AuthProtocol, SASLMechanism

from streams.config import load_settings
from streams.errors import ConfigError
from streams.kafka_auth import faust_credentials


def test_plaintext_needs_no_credentials() -> None:
    assert faust_credentials({}) is None
    assert faust_credentials({"security.protocol": "plaintext"}) is None


def test_sasl_scram_over_tls_verifies_the_broker() -> None:
    creds = faust_credentials(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "msli",
            "sasl.password": "secret",
        }
    )
    assert isinstance(creds, SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_SSL
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (creds.username, creds.password) == ("msli", "secret")
    assert creds.ssl_context is not None
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED and creds.ssl_context.check_hostname


def test_sasl_plaintext_and_the_older_mechanisms_spelling() -> None:
    creds = faust_credentials(
        {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "u"}
    )
    assert isinstance(creds, SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT and creds.ssl_context is None
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_256


def test_tls_with_a_ca_file_verifies_against_it() -> None:
    creds = faust_credentials({"security.protocol": "SSL", "ssl.ca.location": str(_ca_file())})
    assert isinstance(creds, SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_REQUIRED and creds.context.check_hostname
    assert creds.context.cert_store_stats()["x509_ca"] >= 1


def test_verification_is_off_only_where_the_settings_say_so() -> None:
    no_host = faust_credentials({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "none"})
    assert isinstance(no_host, SSLCredentials)
    assert not no_host.context.check_hostname and no_host.context.verify_mode == ssl.CERT_REQUIRED
    off = faust_credentials({"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"})
    assert isinstance(off, SSLCredentials) and off.context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}, "sasl.mechanism=GSSAPI"),
        ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12"}, "ssl.keystore.location"),
        ({"security.protocol": "TLS"}, "security.protocol=TLS"),
        ({"security.protocol": "SSL", "ssl.ca.location": "/no/such/ca.pem"}, "TLS files"),
    ],
)
def test_what_cannot_be_honoured_is_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        faust_credentials(settings)


@pytest.mark.parametrize("value", ["false", "FALSE", "f", "0", " False "])
def test_every_spelling_of_verification_off_needs_permission(monkeypatch, value: str) -> None:
    monkeypatch.setenv("MSLI_KAFKA__ENABLE_SSL_CERTIFICATE_VERIFICATION", value)
    with pytest.raises(ConfigError, match="allow_insecure_kafka"):
        load_settings()
    monkeypatch.setenv("MSLI_ALLOW_INSECURE_KAFKA", "true")
    assert load_settings().kafka["enable.ssl.certificate.verification"] == value


def _ca_file() -> Path:
    """The system's CA bundle stands in for a private CA: any PEM of certificates will do."""
    path = ssl.get_default_verify_paths().cafile
    if path is None or not Path(path).is_file():
        pytest.skip("no CA bundle file on this machine")
    return Path(path)
