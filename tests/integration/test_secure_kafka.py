"""The worker and the clients over SSL and SASL_SSL with SCRAM, on a real broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.streaming import POLICY, ROOT, Deployment, alert_ids, simulated_day

pytestmark = pytest.mark.kafka


def _over(d: Deployment, broker: Any, protocol: str, mechanism: str = "") -> dict[str, str]:
    """``d``'s environment, connecting with ``protocol`` (and SASL ``mechanism``)."""
    env = dict(d.env)
    env.update(
        SESSIONWATCH_SECURITY_PROTOCOL=protocol,
        SESSIONWATCH_BOOTSTRAP_SERVERS=(
            broker.ssl_bootstrap if protocol == "SSL" else broker.sasl_ssl_bootstrap
        ),
        SESSIONWATCH_SSL_CAFILE=str(broker.cafile),
    )
    if mechanism:
        env.update(
            SESSIONWATCH_SASL_MECHANISM=mechanism,
            SESSIONWATCH_SASL_USERNAME=broker.SCRAM_USER,
            SESSIONWATCH_SASL_PASSWORD=broker.scram_password,
        )
    return env


def _cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "detector.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
    )


def _alerts_read(env: dict[str, str], expected: set[str]) -> set[str]:
    """The alert ids ``sessionwatch alerts`` prints, once as many as expected (or a minute
    of tries)."""
    got: set[str] = set()
    for _ in range(60):
        out = _cli(env, "alerts")
        assert out.returncode == 0, out.stderr.decode()
        got = alert_ids(out.stdout.splitlines())
        if len(got) >= len(expected):
            break
    return got


def test_worker_and_clients_over_ssl_and_sasl_ssl_scram(secure_kafka: Any, tmp_path: Path) -> None:
    day, expected = simulated_day(tmp_path)
    d = Deployment(secure_kafka.sasl_ssl_bootstrap, 4, tmp_path / "d")
    d.tmp.mkdir()
    try:
        # Each party over another protocol or mechanism: produce over SSL, the worker over
        # SASL_SSL with SCRAM-SHA-512, the alerts reader with SCRAM-SHA-256.
        produced = _cli(_over(d, secure_kafka, "SSL"), "produce", "--config", str(POLICY), str(day))
        assert produced.returncode == 0, produced.stderr.decode()
        d.env = _over(d, secure_kafka, "SASL_SSL", "SCRAM-SHA-512")
        d.start_worker()
        reader = _over(d, secure_kafka, "SASL_SSL", "SCRAM-SHA-256")
        assert _alerts_read(reader, expected) == expected, d.logs()
    finally:
        d.stop()


def test_wrong_credentials_are_refused_with_a_clear_message(
    secure_kafka: Any, tmp_path: Path
) -> None:
    d = Deployment(secure_kafka.sasl_ssl_bootstrap, 1, tmp_path)
    env = _over(d, secure_kafka, "SASL_SSL", "SCRAM-SHA-512")
    env["SESSIONWATCH_SASL_PASSWORD"] = "not-the-password"
    out = _cli(env, "alerts", timeout=60)
    err = out.stderr.decode()
    assert out.returncode != 0
    assert "authentication failed" in err.lower(), err
    assert "not-the-password" not in err
    assert "Traceback" not in err, err
    # The worker stops at start-up with the same reason, instead of retrying for ever.
    worker = _cli(env, "worker", "-q", "--config", str(POLICY), "--data-dir", str(tmp_path / "w"))
    assert worker.returncode == 1
    assert "the broker refused the SASL credentials" in worker.stderr.decode()
    # Without the CA, the broker's self-signed certificate is not trusted.
    env = _over(d, secure_kafka, "SSL")
    del env["SESSIONWATCH_SSL_CAFILE"]
    (tmp_path / "one.jsonl").write_bytes(orjson.dumps({"type": "login"}) + b"\n")
    out = _cli(env, "produce", "--config", str(POLICY), str(tmp_path / "one.jsonl"), timeout=60)
    err = out.stderr.decode()
    assert out.returncode != 0
    assert "SESSIONWATCH_SSL_CAFILE" in err, err
    assert "Traceback" not in err, err


def test_mutual_tls_with_a_client_certificate(secure_kafka: Any, tmp_path: Path) -> None:
    """A listener that requires a client certificate: with SESSIONWATCH_SSL_CERTFILE and
    _KEYFILE, ``produce``, the worker and ``alerts`` work and the alerts are replay's;
    without the certificate, or with one the broker does not trust, they stop with the
    reason and the setting; a certificate file that cannot be read is refused before any
    connection (exit 2)."""
    day, expected = simulated_day(tmp_path, users=20, hours=8)
    d = Deployment(secure_kafka.mtls_bootstrap, 2, tmp_path / "d")
    d.tmp.mkdir()
    d.env.update(
        SESSIONWATCH_SECURITY_PROTOCOL="SSL",
        SESSIONWATCH_SSL_CAFILE=str(secure_kafka.cafile),
        SESSIONWATCH_SSL_CERTFILE=str(secure_kafka.client_cert),
        SESSIONWATCH_SSL_KEYFILE=str(secure_kafka.client_key),
    )
    try:
        produced = _cli(d.env, "produce", "--config", str(POLICY), str(day))
        assert produced.returncode == 0, produced.stderr.decode()
        d.start_worker()
        assert _alerts_read(d.env, expected) == expected, d.logs()
    finally:
        d.stop()
    without = {k: v for k, v in d.env.items() if "CERTFILE" not in k and "KEYFILE" not in k}
    out = _cli(without, "alerts", timeout=60)
    print(out.stderr.decode()[-1500:])
    assert out.returncode == 1 and "SESSIONWATCH_SSL_CERTFILE" in out.stderr.decode()
    assert "Traceback" not in out.stderr.decode()
    # A certificate of its own making, which the broker does not trust.
    subprocess.run(
        [*("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
         *("-subj", "/CN=stranger", "-keyout", str(tmp_path / "s.key")),
         *("-out", str(tmp_path / "s.pem"))],
        check=True, capture_output=True,
    )  # fmt: skip
    stranger = {
        **d.env,
        "SESSIONWATCH_SSL_CERTFILE": str(tmp_path / "s.pem"),
        "SESSIONWATCH_SSL_KEYFILE": str(tmp_path / "s.key"),
    }
    out = _cli(stranger, "alerts", timeout=60)
    print(out.stderr.decode()[-1500:])
    assert out.returncode == 1 and "SESSIONWATCH_SSL_CERTFILE" in out.stderr.decode()
    assert "Traceback" not in out.stderr.decode()
    missing = {**d.env, "SESSIONWATCH_SSL_KEYFILE": str(tmp_path / "nowhere.key")}
    out = _cli(missing, "alerts", timeout=60)
    err = out.stderr.decode()
    assert out.returncode == 2 and "no client certificate and key read" in err, err
    assert "SESSIONWATCH_SSL_KEYFILE" in err and "Traceback" not in err
