"""``produce``'s account of what the broker confirmed (the broker itself: test_broker_outage)."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaTimeoutError, LeaderNotAvailableError, TopicAlreadyExistsError

from detector.stream.clients import _Deliveries, _refuse_failed_creations
from detector.stream.rights import NOT_AUTHORIZED_TOPIC
from detector.stream.settings import ClusterRefuses


def test_the_first_unconfirmed_event_is_the_first_in_input_order() -> None:
    """Batches of different partitions fail in any order; the message names the earliest
    input position, the second file's lines coming after all of the first's."""
    d = _Deliveries()
    for line in range(1, 6):
        d.failed(None, 0, "a.jsonl", line)
    d.failed(LeaderNotAvailableError(), 1, "b.jsonl", 2)
    d.failed(KafkaTimeoutError(), 0, "a.jsonl", 9)  # the first input: before all of b
    d.failed(LeaderNotAvailableError(), 1, "b.jsonl", 1)
    text = str(d.failure(5))
    assert text.startswith(
        "the broker did not confirm 3 event(s) within 5 s (the first: a.jsonl line 9: "
        "KafkaTimeoutError) and sending stopped there; 5 were confirmed"
    ), text


def test_standard_input_is_named_as_such() -> None:
    d = _Deliveries()
    d.failed(LeaderNotAvailableError(), 0, "-", 3)
    assert "(the first: standard input line 3: LeaderNotAvailableError)" in str(d.failure(120))


def test_a_topic_the_cluster_would_not_create_is_named_with_the_broker_s_error() -> None:
    """CreateTopics answers per topic: a topic that exists already (another client's start
    made it) is fine; any other error stops the command naming the topic and the error."""
    _refuse_failed_creations([("a", 0, None), ("b", TopicAlreadyExistsError.errno, "exists")])
    _refuse_failed_creations([("c", NOT_AUTHORIZED_TOPIC, "no")], NOT_AUTHORIZED_TOPIC)
    with pytest.raises(ClusterRefuses) as refused:
        _refuse_failed_creations([("a", 0, None), ("d", 38, "Replication factor: 3 larger")])
    assert str(refused.value) == (
        "the cluster did not create 'd' (InvalidReplicationFactorError: Replication factor: 3 "
        "larger)"
    )
    with pytest.raises(ClusterRefuses, match=r"'c' \(TopicAuthorizationFailedError"):
        _refuse_failed_creations([("c", NOT_AUTHORIZED_TOPIC)])
