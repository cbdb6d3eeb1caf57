"""Start and stop a single-node Apache Kafka (KRaft) on 127.0.0.1, from Maven Central jars.

No Docker and no tarball are needed: ``mvn dependency:copy-dependencies`` on the
``pom.xml`` beside this file puts the broker's jars in ``lib/``, and this script
formats a fresh storage directory and runs ``kafka.Kafka`` with a minimal
single-node config. Used by the test suite (once per run) and by hand::

    python deploy/kafka/broker.py start   # prints the bootstrap address, keeps running
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIB = HERE / "lib"


def ensure_jars() -> None:
    """Fetches the broker's jars through Maven when they are not there yet."""
    if LIB.is_dir() and any(LIB.glob("kafka_2.13-*.jar")):
        return
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the Kafka broker's jars")
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(HERE / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={LIB}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = Path(home, "bin", "java") if home else shutil.which("java")
    if not java:
        raise RuntimeError("Java 17+ is needed to run the Kafka broker")
    return str(java)


class Broker:
    """One KRaft broker+controller process with its own temporary storage.

    With ``secure=True`` it also listens with SSL and with SASL_SSL (SCRAM-SHA-256 and
    -512, user :attr:`SCRAM_USER`), on a self-signed certificate for 127.0.0.1 made with
    the JDK's keytool; :attr:`cafile` is that certificate in PEM for clients to trust.
    """

    SCRAM_USER = "sessionwatch"

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        secure: bool = False,
        properties: dict[str, str] | None = None,
        joins: Broker | None = None,
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sessionwatch-kafka-"))
        self.port = port or free_port()
        self.controller_port = free_port()
        self.secure = secure
        #: Server properties over the defaults below (tests of a broker's own limits).
        self.properties = dict(properties or {})
        # Kept for a start after :meth:`halt`: the storage is formatted for this cluster.
        self.cluster_id = str(uuid.uuid4())
        #: With ``joins``, a broker-only node of that node's cluster (its controller),
        #: for tests of replicated topics; else node 1, broker and controller.
        self.joins = joins
        self.node_id = 1
        self._joined = 0  # brokers that joined this one's cluster
        if joins is not None:
            assert not secure, "a joining broker speaks PLAINTEXT only"
            self.cluster_id, self.controller_port = joins.cluster_id, joins.controller_port
            joins._joined += 1
            self.node_id = joins.node_id + joins._joined
        self.ssl_port = free_port() if secure else 0
        self.sasl_ssl_port = free_port() if secure else 0
        #: An SSL listener that requires a client certificate (mutual TLS): the one in
        #: :attr:`client_cert` / :attr:`client_key` (PEM, made with openssl), trusted alone.
        self.mtls_port = free_port() if secure else 0
        self.client_cert = self.workdir / "client.pem"
        self.client_key = self.workdir / "client.key"
        self.scram_password = uuid.uuid4().hex if secure else ""
        self._store_password = uuid.uuid4().hex
        self.cafile = self.workdir / "ca.pem"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def mtls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.mtls_port}"

    def _client_truststore(self) -> Path:
        """A client key pair (self-signed, PEM) and a truststore holding its certificate."""
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7"),
                *("-subj", "/CN=sessionwatch-client", "-keyout", str(self.client_key)),
                *("-out", str(self.client_cert)),
            ],
            check=True,
            capture_output=True,
        )
        truststore = self.workdir / "clients.p12"
        keytool = str(Path(_java()).resolve().with_name("keytool"))
        subprocess.run(
            [
                *(keytool, "-importcert", "-noprompt", "-alias", "client"),
                *("-file", str(self.client_cert), "-keystore", str(truststore)),
                *("-storetype", "PKCS12", "-storepass", self._store_password),
            ],
            check=True,
            capture_output=True,
        )
        return truststore

    def _keystore(self) -> Path:
        """A self-signed key pair for 127.0.0.1 (PKCS12) and its certificate in PEM."""
        keystore = self.workdir / "broker.p12"
        keytool = str(Path(_java()).resolve().with_name("keytool"))  # beside the real java
        common = ["-keystore", str(keystore), "-storepass", self._store_password]
        subprocess.run(
            [
                *(keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA"),
                *("-keysize", "2048", "-validity", "7", "-dname", "CN=127.0.0.1"),
                *("-ext", "SAN=IP:127.0.0.1,DNS:localhost", "-storetype", "PKCS12"),
                *("-keypass", self._store_password, *common),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                keytool,
                "-exportcert",
                "-rfc",
                "-alias",
                "broker",
                "-file",
                str(self.cafile),
                *common,
            ],
            check=True,
            capture_output=True,
        )
        return keystore

    def _config(self) -> Path:
        data = self.workdir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Tests create every topic they use, with explicit partition counts.
            "auto.create.topics.enable": "false",
            # No 3 s wait for more members before the first rebalance: tests start fast.
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.messages": "1000000",
        }
        if self.joins is not None:
            props["process.roles"] = "broker"
            props["node.id"] = str(self.node_id)
            props["listeners"] = f"PLAINTEXT://127.0.0.1:{self.port}"
        if self.secure:
            secure = (
                f"SSL://127.0.0.1:{self.ssl_port},SASL_SSL://127.0.0.1:{self.sasl_ssl_port},"
                f"MTLS://127.0.0.1:{self.mtls_port}"
            )
            props["listeners"] += "," + secure
            props["advertised.listeners"] += "," + secure
            props["listener.security.protocol.map"] += ",SSL:SSL,SASL_SSL:SASL_SSL,MTLS:SSL"
            props["listener.name.mtls.ssl.client.auth"] = "required"
            props["listener.name.mtls.ssl.truststore.location"] = str(self._client_truststore())
            props["listener.name.mtls.ssl.truststore.type"] = "PKCS12"
            props["listener.name.mtls.ssl.truststore.password"] = self._store_password
            props["sasl.enabled.mechanisms"] = "SCRAM-SHA-256,SCRAM-SHA-512"
            for mechanism in ("scram-sha-256", "scram-sha-512"):
                props[f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
            props.update(
                {
                    "ssl.keystore.type": "PKCS12",
                    "ssl.keystore.location": str(self._keystore()),
                    "ssl.keystore.password": self._store_password,
                    "ssl.key.password": self._store_password,
                }
            )
        props.update(self.properties)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def start(self, timeout: float = 90.0) -> Broker:
        ensure_jars()
        config = self._config()
        classpath = f"{LIB}/*"
        env = dict(os.environ)
        env["KAFKA_HEAP_OPTS"] = "-Xmx512m"
        base = [
            _java(),
            "-Xmx512m",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={HERE / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            classpath,
        ]
        subprocess.run(
            [
                *base,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.cluster_id,
                "-c",
                str(config),
                "--ignore-formatted",
                *(
                    arg
                    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
                    for arg in (
                        "--add-scram",
                        f"{mechanism}=[name={self.SCRAM_USER},password={self.scram_password}]",
                    )
                    if self.secure
                ),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        log = open(self.workdir / "broker.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [*base, "kafka.Kafka", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Kafka exited early; see {self.workdir / 'broker.log'}")
            if _api_versions_ok(self.port):
                return
            time.sleep(0.3)
        raise RuntimeError(f"Kafka did not answer within {timeout:.0f}s; see {self.workdir}")

    def stop(self) -> None:
        """Stops the broker and removes its storage."""
        self.halt()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def halt(self) -> None:
        """Stops the broker and keeps its storage: :meth:`start` brings the same broker
        back, on the same ports, with its topics and committed offsets (an outage)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


def _api_versions_ok(port: int) -> bool:
    """True once the broker answers an ApiVersions request (it is ready for clients)."""
    request = (
        (18).to_bytes(2, "big")  # ApiVersions
        + (0).to_bytes(2, "big")  # version 0
        + (1).to_bytes(4, "big")  # correlation id
        + (-1).to_bytes(2, "big", signed=True)  # null client id
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(len(request).to_bytes(4, "big") + request)
            size = int.from_bytes(s.recv(4), "big")
            body = s.recv(size)
            return len(body) >= 6 and body[4:6] == b"\x00\x00"  # error code NONE
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if argv[:1] != ["start"]:
        print("usage: broker.py start  (Ctrl-C stops it)", file=sys.stderr)
        return 2
    # A supervisor (systemd, a CI runner, kill) stops with SIGTERM: without this the
    # interpreter would die at once, leaving the broker running and its storage behind.
    signal.signal(signal.SIGTERM, _interrupt)
    broker = Broker(port=int(os.environ.get("KAFKA_PORT", "9092")))
    try:
        broker.start()
        print(broker.bootstrap, flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
