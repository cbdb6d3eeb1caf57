"""Streaming settings, from the environment (and CLI flags that override it).

Every setting is declared once here, with its environment variable and default,
so the README's table and ``sessionwatch worker --help`` cannot drift apart.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any


class BrokerUnreachable(Exception):
    """No broker could be reached or the handshake was refused; the text says what to fix.

    Here, not beside the clients, so the CLI can catch it without importing aiokafka."""


class TopicMismatch(Exception):
    """An existing topic's partition count is not the configured one; the text says what
    to set. Faust fails on every table write of the partitions beyond the smaller count."""


class ClusterRefuses(Exception):
    """The cluster cannot meet a setting (a failover outside its bounds on a group's
    session timeout, a replication factor over its broker count); the text says which
    and what to set. Caught before Faust starts: the Kafka client would only log the
    broker's refusal, and the worker would wait, detecting nothing."""


class NoSuchTopic(Exception):
    """A topic a client only reads is not on the broker; the text names the setting."""


#: How long ``produce`` keeps an event it could not deliver yet (a broker restarting,
#: a leader being elected) before giving up on it: Kafka's own producers default to 120 s.
DELIVERY_TIMEOUT_S = 120.0


#: The failover range: Kafka brokers refuse group session timeouts under 6 s by default
#: (group.min.session.timeout.ms), and Faust requires one under its 90 s request timeout.
MIN_FAILOVER_S, MAX_FAILOVER_S = 6.0, 90.0


def heartbeat_seconds(failover_s: float) -> float:
    """Three heartbeats per failover window (Kafka's advice), at most Faust's 3 s."""
    return min(3.0, failover_s / 3)


class NotDelivered(Exception):
    """The broker did not confirm some produced events within the delivery timeout; the
    text says which input line was the first and how many there were."""


class InvalidSetting(ValueError):
    """A setting's environment variable cannot be read as its type; the text names it."""


def _env(name: str, default: str, secret: bool = False) -> Any:
    """A string setting; a ``secret`` one is left out of the settings' repr (a traceback
    or a debug line showing them must not show it)."""
    return field(
        default_factory=lambda: os.environ.get(name, default),
        metadata={"env": name},
        repr=not secret,
    )


def _number_env(name: str, default: float, kind: type[float] = float) -> Any:
    """A numeric setting; ``kind`` int accepts whole numbers only."""
    what = "a whole number" if kind is int else "a number"

    def read() -> float:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise InvalidSetting(f"{name} must be {what}, not {raw!r}") from None

    return field(default_factory=read, metadata={"env": name})


def _int_env(name: str, default: int) -> Any:
    return _number_env(name, default, int)


@dataclass
class StreamSettings:
    """Where the broker is, how to talk to it, and what the topics are called."""

    bootstrap_servers: str = field(
        default_factory=lambda: os.environ.get(
            "SESSIONWATCH_BOOTSTRAP_SERVERS",
            os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        ),
        metadata={"env": "SESSIONWATCH_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS)"},
    )
    security_protocol: str = _env("SESSIONWATCH_SECURITY_PROTOCOL", "PLAINTEXT")
    sasl_mechanism: str = _env("SESSIONWATCH_SASL_MECHANISM", "SCRAM-SHA-512")
    sasl_username: str = _env("SESSIONWATCH_SASL_USERNAME", "")
    sasl_password: str = _env("SESSIONWATCH_SASL_PASSWORD", "", secret=True)
    ssl_cafile: str = _env("SESSIONWATCH_SSL_CAFILE", "")
    #: A client certificate (PEM) for brokers that require one (mutual TLS), its key if
    #: not in the same file, and the key's password if it is encrypted.
    ssl_certfile: str = _env("SESSIONWATCH_SSL_CERTFILE", "")
    ssl_keyfile: str = _env("SESSIONWATCH_SSL_KEYFILE", "")
    ssl_key_password: str = _env("SESSIONWATCH_SSL_KEY_PASSWORD", "", secret=True)
    app_id: str = _env("SESSIONWATCH_APP_ID", "sessionwatch")
    partitions: int = _int_env("SESSIONWATCH_PARTITIONS", 8)
    events_topic: str = _env("SESSIONWATCH_TOPIC_EVENTS", "session-events")
    alerts_topic: str = _env("SESSIONWATCH_TOPIC_ALERTS", "session-alerts")
    actions_topic: str = _env("SESSIONWATCH_TOPIC_ACTIONS", "session-actions")
    dlq_topic: str = _env("SESSIONWATCH_TOPIC_DLQ", "session-events-dlq")
    store: str = _env("SESSIONWATCH_STORE", "rocksdb://")
    data_dir: str = _env("SESSIONWATCH_DATA_DIR", "./sessionwatch-data")
    web_host: str = _env("SESSIONWATCH_WEB_HOST", "127.0.0.1")
    #: Address the web server binds; empty means web_host. A container binds 0.0.0.0
    #: while web_host is the name other workers reach it by (API forwarding).
    web_bind: str = _env("SESSIONWATCH_WEB_BIND", "")
    web_port: int = _int_env("SESSIONWATCH_WEB_PORT", 6066)
    api_token: str = _env("SESSIONWATCH_API_TOKEN", "", secret=True)
    #: Vendor-format topics, ``topic:format,...`` (formats of detector.adapters): each
    #: is normalised onto session-events with the routing key (see README: Streaming).
    input_topics: str = _env("SESSIONWATCH_INPUT_TOPICS", "")
    batch_size: int = _int_env("SESSIONWATCH_BATCH_SIZE", 500)
    #: How records reach the engine: "fetch", a fetch's records at once (fast); or
    #: "stream", one at a time through Faust's agent stream and take_events (stock
    #: Faust, ~2x slower; the fallback should a Faust change break the other).
    delivery: str = _env("SESSIONWATCH_DELIVERY", "fetch")
    #: Who decodes the fetched record batches of the worker's own topics: "native", the
    #: compiled extension, in one call per partition (the Kafka client's own decoder
    #: for anything but plain uncompressed batches, and without the extension); or
    #: "client", the Kafka client's decoder always.
    decode: str = _env("SESSIONWATCH_DECODE", "native")
    #: Seconds between writes of changed state (then the offsets they cover are
    #: committed); 0 = after every batch. Longer: fewer writes, more to read again after
    #: a crash or rebalance.
    checkpoint_seconds: float = _number_env("SESSIONWATCH_CHECKPOINT_SECONDS", 5.0)
    #: Seconds without a heartbeat after which the group gives a worker's partitions to
    #: the others (the consumer group's session timeout): how long detection of those
    #: partitions stops when a worker dies. Faust's 60 s is lowered: its heartbeats come
    #: from the consumer's own thread, which the detection never blocks for seconds.
    failover_seconds: float = _number_env("SESSIONWATCH_FAILOVER_SECONDS", 10.0)
    #: Copies the cluster keeps of each topic the worker or ``produce`` creates (events,
    #: alerts, actions, dead letters, the state changelog): 1 loses state and alerts with
    #: one broker's disk. Existing topics keep theirs.
    replication: int = _int_env("SESSIONWATCH_REPLICATION", 1)

    def validate(self) -> list[str]:
        problems = []
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"):
            problems.append(
                f"security protocol {self.security_protocol!r} is not one of PLAINTEXT, SSL, "
                "SASL_SSL, SASL_PLAINTEXT"
            )
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            problems.append("SASL needs SESSIONWATCH_SASL_USERNAME and SESSIONWATCH_SASL_PASSWORD")
        if self.ssl_keyfile and not self.ssl_certfile:
            problems.append(
                "SESSIONWATCH_SSL_KEYFILE needs SESSIONWATCH_SSL_CERTFILE (the certificate)"
            )
        elif self.security_protocol in ("SSL", "SASL_SSL"):
            problems.extend(self._tls_problems())
        if self.sasl_mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"):
            problems.append(f"SASL mechanism {self.sasl_mechanism!r} is not supported")
        if self.partitions < 1:
            problems.append("partitions must be at least 1 (SESSIONWATCH_PARTITIONS)")
        if not 1 <= self.web_port <= 65535:
            problems.append(
                f"web port {self.web_port} must be 1-65535 (SESSIONWATCH_WEB_PORT or --web-port)"
            )
        if self.batch_size < 1:
            problems.append("batch size must be at least 1 (SESSIONWATCH_BATCH_SIZE)")
        if self.delivery not in ("fetch", "stream"):
            problems.append(
                f"delivery {self.delivery!r} must be fetch or stream (SESSIONWATCH_DELIVERY)"
            )
        if self.decode not in ("native", "client"):
            problems.append(
                f"decode {self.decode!r} must be native or client (SESSIONWATCH_DECODE)"
            )
        if not 0 <= self.checkpoint_seconds <= 300:
            problems.append(
                "checkpoint interval must be 0-300 seconds (SESSIONWATCH_CHECKPOINT_SECONDS)"
            )
        if not MIN_FAILOVER_S <= self.failover_seconds <= MAX_FAILOVER_S:
            problems.append(
                f"failover must be {MIN_FAILOVER_S:g}-{MAX_FAILOVER_S:g} seconds "
                "(SESSIONWATCH_FAILOVER_SECONDS)"
            )
        if self.replication < 1:
            problems.append("replication must be at least 1 (SESSIONWATCH_REPLICATION)")
        if not self.store.startswith(("rocksdb://", "memory://")):
            problems.append(f"store {self.store!r} must be rocksdb:// or memory://")
        try:
            self.vendor_inputs()
        except ValueError as err:
            problems.append(str(err))
        return problems

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of every client (the worker's, ``produce``'s, ``alerts``'s):
        the CA to trust and, for mutual TLS, the client certificate."""
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile or None,
            certfile=self.ssl_certfile or None,
            keyfile=self.ssl_keyfile or None,
            password=self.ssl_key_password or None,
        )
        return context

    def _tls_problems(self) -> list[str]:
        """Files that cannot be read or do not hold what they should, named by their
        variable (else the first connection fails with a bare OSError or SSLError)."""
        if self.ssl_cafile:
            try:
                ssl.create_default_context(cafile=self.ssl_cafile)
            except (OSError, ssl.SSLError) as err:
                return [f"SESSIONWATCH_SSL_CAFILE {self.ssl_cafile!r}: no CA certificate ({err})"]
        if self.ssl_certfile:
            try:
                ssl.create_default_context().load_cert_chain(
                    self.ssl_certfile, self.ssl_keyfile or None, self.ssl_key_password or None
                )
            except (OSError, ssl.SSLError) as err:
                key = repr(self.ssl_keyfile) if self.ssl_keyfile else "none: in the same file"
                return [
                    f"SESSIONWATCH_SSL_CERTFILE {self.ssl_certfile!r} (SESSIONWATCH_SSL_KEYFILE "
                    f"{key}): no client certificate and key read ({err}; an encrypted key "
                    "needs SESSIONWATCH_SSL_KEY_PASSWORD)"
                ]
        return []

    def vendor_inputs(self) -> list[tuple[str, str]]:
        """``SESSIONWATCH_INPUT_TOPICS`` as (topic, format) pairs; ValueError if malformed."""
        from detector.adapters import ADAPTERS

        pairs = []
        for item in filter(None, (p.strip() for p in self.input_topics.split(","))):
            topic, _, fmt = item.rpartition(":")
            if not topic or fmt not in ADAPTERS:
                raise ValueError(
                    f"SESSIONWATCH_INPUT_TOPICS entry {item!r} must be topic:format with a "
                    f"format among {', '.join(ADAPTERS)}"
                )
            if topic == self.events_topic:
                raise ValueError(f"input topic {topic!r} is the events topic itself")
            pairs.append((topic, fmt))
        return pairs

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Connection options for plain aiokafka clients (produce, alerts)."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kw["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL"):
            kw.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return kw
