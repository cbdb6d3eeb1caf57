"""What the cluster lets this client do, asked before any work starts.

On a cluster with ACLs (most managed Kafka), a missing right does not fail where it is
clear: a worker without READ on its group stays up and reads nothing, ``produce``
without WRITE retries for its whole delivery timeout, ``alerts`` without READ stops with
a traceback. Kafka tells a client which operations it may perform on a topic (Metadata,
version 8 and later) and on a group (DescribeGroups, version 3 and later), so each
client asks for the rights it needs and is refused at start, naming every one missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    IncompatibleBrokerVersion,
    KafkaError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from aiokafka.protocol.admin import DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

log = logging.getLogger(__name__)

#: Kafka's ACL operation codes (``org.apache.kafka.common.acl.AclOperation``): bit
#: ``1 << code`` of an authorized-operations field.
ALL, READ, WRITE, DESCRIBE = 2, 3, 4, 8
_NAMES = {READ: "READ", WRITE: "WRITE", DESCRIBE: "DESCRIBE"}
#: The field's value when the broker did not compute it.
_UNSET = -(2**31)
#: A topic this client may not even describe (CreateTopics: may not make or see).
NOT_AUTHORIZED_TOPIC = TopicAuthorizationFailedError.errno


class _MetadataResponseV8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            Array(
                ("node_id", Int32),
                ("host", String("utf-8")),
                ("port", Int32),
                ("rack", String("utf-8")),
            ),
        ),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _TopicRights(Request[_MetadataRequestV8]):  # type: ignore[misc]
    """Metadata of ``topics`` with the operations this client may perform on each."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self._topics, False, False, True)


class _DescribeGroupsRequestV3(RequestStruct):  # type: ignore[misc]
    """aiokafka's own v3 reads the answer as v2's, which drops the authorized operations."""

    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class _GroupRights(Request[_DescribeGroupsRequestV3]):  # type: ignore[misc]
    """A group's description with the operations this client may perform on it."""

    API_KEY = 15

    def __init__(self, group: str) -> None:
        self._group = group

    def build(
        self, request_struct_class: type[_DescribeGroupsRequestV3]
    ) -> _DescribeGroupsRequestV3:
        return request_struct_class([self._group], True)


def _spelled(needs: Iterable[int]) -> str:
    return "+".join(_NAMES[op] for op in sorted(needs))


async def missing_rights(
    admin: AIOKafkaAdminClient, topics: Mapping[str, Iterable[int]], group: str | None = None
) -> list[str]:
    """The rights among ``topics`` (name: operations needed) and READ on ``group`` that
    the cluster does not grant this client, as "WRITE on topic 'x'". Topics that do not
    exist are left out (making them is :func:`detector.stream.clients._ensure_topics`'s
    part); a broker too old to say (before Kafka 2.3) grants everything here."""
    missing: list[str] = []
    try:
        response = await admin._send_request(_TopicRights(sorted(topics)))
    except IncompatibleBrokerVersion:
        log.info("the brokers cannot tell a client's rights (Metadata v8): not checked")
        return []
    for topic in response.topics:
        error, name, granted = topic[0], topic[1], topic[4]
        needs = set(topics[name]) | {DESCRIBE}
        if error == UnknownTopicOrPartitionError.errno:
            continue
        if error == NOT_AUTHORIZED_TOPIC:
            missing.append(f"{_spelled(needs)} on topic {name!r}")
        elif granted != _UNSET and not granted & (1 << ALL):
            lacking = {op for op in needs if not granted & (1 << op)}
            if lacking:
                missing.append(f"{_spelled(lacking)} on topic {name!r}")
    if group is not None:
        try:
            coordinator = await _coordinator(admin, group)
            described = await admin._send_request(_GroupRights(group), coordinator)
            (answer,) = described.to_object()["groups"]
            granted = answer.get("authorized_operations", _UNSET)
            error = answer["error_code"]
        except GroupAuthorizationFailedError:
            granted, error = 0, 0
        except (IncompatibleBrokerVersion, KafkaError) as exc:
            log.info("the group's rights could not be read (%r): not checked", exc)
            return missing
        refused = error == GroupAuthorizationFailedError.errno
        if refused or (granted != _UNSET and not granted & ((1 << READ) | (1 << ALL))):
            missing.append(f"READ on group {group!r}")
    return missing


async def _coordinator(admin: AIOKafkaAdminClient, group: str) -> int:
    """The group's coordinator. A cluster whose group offsets topic is not yet made
    (no group has ever joined) has none for a moment: it makes the topic when asked."""
    for _ in range(COORDINATOR_TRIES - 1):
        try:
            return int(await admin.find_coordinator(group))
        except GroupCoordinatorNotAvailableError:
            await asyncio.sleep(0.5)
    return int(await admin.find_coordinator(group))


#: Tries to find a group's coordinator, 0.5 s apart.
COORDINATOR_TRIES = 20


def refusal(missing: list[str], who: str) -> str:
    """The start-up refusal for ``missing`` rights of ``who`` (the principal, or how
    the client connects)."""
    return (
        f"the cluster does not grant {who} {'this right' if len(missing) == 1 else 'these rights'}:"
        f" {', '.join(missing)}. Grant them (README: Kafka rights) or connect as a principal"
        " that has them"
    )
