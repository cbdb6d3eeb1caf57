"""Clients on a cluster with ACLs: the rights README lists are enough, and a missing one
is named at start (exit 2) where it used to fail late, obscurely or not at all."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from detector.stream.clients import ensure_topics
from detector.stream.settings import StreamSettings
from tests.integration.streaming import (
    POLICY,
    ROOT,
    Deployment,
    alert_ids,
    free_port,
    simulated_day,
)
from tests.integration.test_secure_kafka import _cli, _over
from tests.integration.test_streaming import assert_same_alerts

pytestmark = pytest.mark.kafka

#: README's "Kafka rights" for the worker, ``produce`` and ``alerts`` (each implies
#: DESCRIBE), with the SPEC topics made beforehand: OPERATION:RESOURCE:NAME, where APP,
#: EVENTS, ALERTS, ACTIONS and DLQ stand for the deployment's names and a trailing * is
#: a prefix.
WORKER = [
    "READ:TOPIC:EVENTS",
    "WRITE:TOPIC:ALERTS",
    "WRITE:TOPIC:ACTIONS",
    "WRITE:TOPIC:DLQ",
    "CREATE:TOPIC:APP-*",
    "READ:TOPIC:APP-*",
    "WRITE:TOPIC:APP-*",
    "READ:GROUP:APP",
]
PRODUCE = ["WRITE:TOPIC:EVENTS", "WRITE:TOPIC:DLQ"]
ALERTS = ["READ:TOPIC:ALERTS"]


@pytest.fixture(scope="module")
def acl_broker() -> Iterator[Any]:
    """A broker with Kafka's authorizer that denies what no ACL allows; the tests' own
    PLAINTEXT connections (and the broker's) are the super user, the clients under test
    connect over SASL_SSL as user ``sessionwatch``."""
    sys.path.insert(0, str(ROOT / "deploy" / "kafka"))
    from broker import Broker

    broker = Broker(
        secure=True,
        properties={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        },
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


def _deployment(broker: Any, tmp: Path, grants: list[str], *, made: bool = True) -> Deployment:
    """A deployment whose user ``sessionwatch`` has ``grants``; its SPEC topics made
    beforehand by the super user unless ``made`` is False."""
    d = Deployment(broker.bootstrap, 2, tmp)
    names = {**{k.upper(): v for k, v in d.topics.items()}, "APP": d.env["SESSIONWATCH_APP_ID"]}

    def named(grant: str) -> str:
        operation, kind, name = grant.split(":")
        for placeholder, value in names.items():
            name = name.replace(placeholder, value)
        return f"ALLOW:User:{broker.SCRAM_USER}:{operation}:{kind}:{name}"

    if grants:
        subprocess.run(
            ["java", "-cp", str(ROOT / "deploy" / "kafka" / "lib" / "*"),
             str(Path(__file__).with_name("Acls.java")), broker.bootstrap,
             *map(named, grants)],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
    if made:
        settings = replace(
            StreamSettings(),
            bootstrap_servers=broker.bootstrap,
            partitions=2,
            events_topic=d.topics["events"],
            alerts_topic=d.topics["alerts"],
            actions_topic=d.topics["actions"],
            dlq_topic=d.topics["dlq"],
        )
        asyncio.run(ensure_topics(settings))
    d.env = _over(d, broker, "SASL_SSL", "SCRAM-SHA-512")
    return d


async def _topics(bootstrap: str, names: list[str]) -> dict[str, tuple[int, str]]:
    """Each topic's partition count and cleanup policy, as the super user reads them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    policy = {
        resource[3]: dict((entry[0], entry[1]) for entry in resource[4])["cleanup.policy"]
        for response in configs
        for resource in response.resources
    }
    return {t["topic"]: (len(t["partitions"]), policy[t["topic"]]) for t in described}


def _worker(d: Deployment, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    """A worker expected to be refused at start."""
    return _cli(
        d.env,
        "worker", "-q", "--config", str(POLICY), "--data-dir", str(tmp / "data"),
        "--web-port", str(free_port()),
        timeout=90,
    )  # fmt: skip


def test_the_rights_readme_lists_are_enough(acl_broker: Any, tmp_path: Path) -> None:
    d = _deployment(acl_broker, tmp_path, WORKER + PRODUCE + ALERTS)
    day, expected = simulated_day(tmp_path, users=10, hours=4)
    produced = _cli(d.env, "produce", "--config", str(POLICY), str(day))
    assert produced.returncode == 0, produced.stderr.decode()[-2000:]
    d.start_worker("w")
    try:
        assert_same_alerts(
            d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected), expected, d
        )
        read = _cli(d.env, "alerts")
        assert read.returncode == 0, read.stderr.decode()[-2000:]
        assert alert_ids(read.stdout.splitlines()) == expected
        assert "Traceback" not in d.logs()
        # Without DESCRIBE_CONFIGS on the cluster the failover is not checked, and said so.
        assert "the failover of 10 s is not checked" in d.logs()
        # Faust's topics, made by the worker before Faust's start, as Faust makes them.
        app = d.env["SESSIONWATCH_APP_ID"]
        made = asyncio.run(
            _topics(acl_broker.bootstrap, [f"{app}-state-changelog", f"{app}-__assignor-__leader"])
        )
        assert made == {
            f"{app}-state-changelog": (2, "compact"),
            f"{app}-__assignor-__leader": (1, "delete"),
        }
    finally:
        d.stop()


@pytest.mark.parametrize(
    ("withheld", "named"),
    [
        # It used to stay up and read nothing.
        ("READ:GROUP:APP", "does not grant user 'sessionwatch' this right: READ on group 'APP'"),
        # It used to stop at its first alert; without DESCRIBE the topic is not even seen.
        ("WRITE:TOPIC:ALERTS", "neither shows this client nor lets it create topic(s) 'ALERTS'"),
        ("READ:TOPIC:EVENTS", "neither shows this client nor lets it create topic(s) 'EVENTS'"),
        # Faust's own topics: it used to stop with a traceback, at the first start also
        # without READ or WRITE on them (the worker now makes them before Faust starts).
        ("CREATE:TOPIC:APP-*", "CREATE on topic 'APP-state-changelog'"),
        ("CREATE:TOPIC:APP-*", "CREATE on topic 'APP-__assignor-__leader'"),
        ("READ:TOPIC:APP-*", "READ on topic 'APP-state-changelog'"),
        ("WRITE:TOPIC:APP-*", "WRITE on topic 'APP-__assignor-__leader'"),
    ],
)  # fmt: skip
def test_a_worker_without_a_right_is_refused_at_start_naming_it(
    acl_broker: Any, tmp_path: Path, withheld: str, named: str
) -> None:
    d = _deployment(acl_broker, tmp_path, [g for g in WORKER if g != withheld])
    names = {"APP": d.env["SESSIONWATCH_APP_ID"], "ALERTS": d.topics["alerts"]}
    for placeholder, value in {**names, "EVENTS": d.topics["events"]}.items():
        named = named.replace(placeholder, value)
    refused = _worker(d, tmp_path)
    says = refused.stderr.decode()
    assert refused.returncode == 2, says[-3000:]
    assert named in says, says[-2000:]
    assert "Traceback" not in says


def test_a_worker_that_sees_a_topic_but_may_not_use_it_is_told_which_right(
    acl_broker: Any, tmp_path: Path
) -> None:
    grants = [g for g in WORKER if g != "WRITE:TOPIC:ALERTS"] + ["DESCRIBE:TOPIC:ALERTS"]
    d = _deployment(acl_broker, tmp_path, grants)
    refused = _worker(d, tmp_path)
    says = refused.stderr.decode()
    assert refused.returncode == 2, says[-3000:]
    assert f"this right: WRITE on topic {d.topics['alerts']!r}" in says, says[-2000:]


def test_produce_and_alerts_without_their_rights_are_refused_at_start(
    acl_broker: Any, tmp_path: Path
) -> None:
    """``produce`` without WRITE used to retry for its whole delivery timeout (120 s) and
    then blame the broker; ``alerts`` without READ stopped with a traceback; ``produce``
    that could not make its topics waited 120 s for them."""
    day, _ = simulated_day(tmp_path, users=3, hours=1)
    d = _deployment(acl_broker, tmp_path / "a", ["WRITE:TOPIC:DLQ", "DESCRIBE:TOPIC:EVENTS"])
    produced = _cli(d.env, "produce", "--config", str(POLICY), str(day), timeout=60)
    assert produced.returncode == 2, produced.stderr.decode()[-2000:]
    assert f"this right: WRITE on topic {d.topics['events']!r}" in produced.stderr.decode()
    read = _cli(d.env, "alerts", timeout=60)
    assert read.returncode == 2, read.stderr.decode()[-2000:]
    assert f"READ+DESCRIBE on topic {d.topics['alerts']!r}" in read.stderr.decode()

    unmade = _deployment(acl_broker, tmp_path / "b", PRODUCE, made=False)
    produced = _cli(unmade.env, "produce", "--config", str(POLICY), str(day), timeout=60)
    says = produced.stderr.decode()
    assert produced.returncode == 2, says[-2000:]
    events, dlq = unmade.topics["events"], unmade.topics["dlq"]
    assert "neither shows this client nor lets it create topic(s)" in says
    assert repr(events) in says and repr(dlq) in says
