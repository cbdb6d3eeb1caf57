"""Plain aiokafka clients behind ``sessionwatch produce`` and ``sessionwatch alerts``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from mode.utils.times import want_seconds

from detector.deadletter import dead_letter
from detector.events import Event, InvalidEvent, dated_ahead, decode
from detector.fingerprint import Fingerprinter
from detector.replay import open_input, until_unreadable
from detector.stream.repeats import hold_back_repeats
from detector.stream.rights import NOT_AUTHORIZED_TOPIC, READ, WRITE, missing_rights, refusal
from detector.stream.routing import KeyPartitioner, routing_key
from detector.stream.settings import (
    DELIVERY_TIMEOUT_S,
    BrokerUnreachable,
    ClusterRefuses,
    NoSuchTopic,
    NotDelivered,
    StreamSettings,
    TopicMismatch,
)

if TYPE_CHECKING:
    import faust

_HINTS = (
    (
        "Authentication failed",
        "the broker refused the SASL credentials: check SESSIONWATCH_SASL_USERNAME, "
        "SESSIONWATCH_SASL_PASSWORD and SESSIONWATCH_SASL_MECHANISM",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the broker's certificate is not trusted (or not issued for this address): set "
        "SESSIONWATCH_SSL_CAFILE to the CA certificate that signed it",
    ),
    (
        "SSL",
        "the TLS handshake failed: check that the listener speaks "
        "SESSIONWATCH_SECURITY_PROTOCOL and that SESSIONWATCH_SSL_CAFILE is right",
    ),
)


log = logging.getLogger(__name__)

T = TypeVar("T")


def run_with_broker(settings: StreamSettings, client: Coroutine[Any, Any, T]) -> T:
    """Runs a client coroutine; a refused connection becomes :class:`BrokerUnreachable`.
    While the broker is away, the client's complaints are logged once per kind and window
    (``hold_back_repeats``), as the worker's are."""
    hold_back_repeats("aiokafka")
    with _explained_connection_errors(settings):
        return asyncio.run(client)


@contextlib.contextmanager
def _explained_connection_errors(settings: StreamSettings) -> Iterator[None]:
    """Turns aiokafka's bare "Unable to bootstrap" into :class:`BrokerUnreachable` that
    names the cause (aiokafka only logs it) and the setting to fix. Never quotes secrets:
    the broker's answer and the user name, not the password."""
    causes: list[str] = []

    class _Causes(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if text.startswith("Unable connect to"):
                causes.append(text.split(": ", 1)[-1])

    handler = _Causes(logging.ERROR)
    logger = logging.getLogger("aiokafka")
    logger.addHandler(handler)
    try:
        yield
    except KafkaConnectionError as exc:
        cause = causes[-1] if causes else str(exc)
        if not cause.strip() and "SSL" in settings.security_protocol:
            cause = "SSL: the connection closed during the TLS handshake"
        hint = next(
            (h for marker, h in _HINTS if marker in cause),
            "no broker answered: check SESSIONWATCH_BOOTSTRAP_SERVERS and "
            "SESSIONWATCH_SECURITY_PROTOCOL",
        )
        if settings.security_protocol in ("SSL", "SASL_SSL") and cause.endswith(" closed"):
            # TLS 1.3: a broker that wants a client certificate (or does not trust the
            # one given) closes the connection only after the client's side of the
            # handshake has succeeded, with no reason the client can read.
            hint = (
                "the broker closed the connection after the TLS handshake: if its listener "
                "requires a client certificate, set SESSIONWATCH_SSL_CERTFILE (and "
                "SESSIONWATCH_SSL_KEYFILE) to one it trusts"
                + ("" if settings.ssl_certfile else " (none is set)")
                + "; else check SESSIONWATCH_SECURITY_PROTOCOL"
            )
        who = (
            f" as {settings.sasl_username!r} ({settings.sasl_mechanism})"
            if settings.security_protocol.startswith("SASL")
            else ""
        )
        raise BrokerUnreachable(
            f"cannot connect to Kafka at {settings.bootstrap_servers} over "
            f"{settings.security_protocol}{who}: {hint} (broker connection: {cause})"
        ) from None
    finally:
        logger.removeHandler(handler)


@contextlib.asynccontextmanager
async def _admin(settings: StreamSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def ensure_topics(settings: StreamSettings) -> None:
    """Creates the SPEC topics if they are missing (the benchmarks; the worker's own
    start does it in :func:`prepare_worker`, ``produce``'s in :func:`_prepare_produce`)."""
    async with _admin(settings) as admin:
        await _ensure_topics(admin, settings)


async def _prepare_produce(settings: StreamSettings) -> None:
    """The topics ``produce`` writes, made if missing, and its right to write them."""
    mine = (settings.events_topic, settings.dlq_topic)
    async with _admin(settings) as admin:
        await _ensure_topics(admin, settings, needed=mine)
        await _check_rights(admin, settings, dict.fromkeys(mine, (WRITE,)))


async def prepare_worker(settings: StreamSettings, faust_made: Sequence[NewTopic] = ()) -> None:
    """What the worker checks and makes before Faust starts, over one connection: the
    topics (:func:`_ensure_topics`, and ``faust_made``, Faust's own as :func:`faust_topics`
    gives them), their partition counts (:func:`_check_partitions`), the failover
    (:func:`_check_failover`) and its rights on the cluster (:func:`_check_rights`).
    Faust's topics are made here, not by Faust, so that the rights on them are known at
    the first start too: a topic that does not exist has no rights to ask about, and
    Faust stopped with a traceback on the first record it could not read or write."""
    names = tuple(topic.name for topic in faust_made)
    async with _admin(settings) as admin:
        existing = await _ensure_topics(admin, settings, names)
        await _check_partitions(admin, settings)
        await _check_failover(admin, settings)
        uncreated = await _make(admin, [t for t in faust_made if t.name not in existing])
        needs = {
            settings.events_topic: (READ,),
            **{topic: (READ,) for topic, _ in settings.vendor_inputs()},
            settings.alerts_topic: (WRITE,),
            settings.actions_topic: (WRITE,),
            settings.dlq_topic: (WRITE,),
            **dict.fromkeys(names, (READ, WRITE)),
        }
        await _check_rights(admin, settings, needs, settings.app_id, uncreated)


def faust_topics(app: faust.App) -> list[NewTopic]:
    """The topics Faust makes at its start, as it would make them (its ``Topic.declare``,
    with its Kafka transport's own ``_topic_config``): each table's changelog and the
    partition assignor's leader topic."""
    topics: list[Any] = [table.changelog_topic for table in app.tables.values()]
    if not app.conf.topic_disable_leader:
        assignor: Any = app._leader_assignor  # its topic is not in Faust's interface
        topics.append(assignor._leader_topic)
    transport: Any = app.transport  # the Kafka driver's; its config is not interface
    made = []
    for topic in topics:
        retention_ms = int(want_seconds(topic.retention) * 1000.0) if topic.retention else None
        config = transport._topic_config(retention_ms, topic.compacting, topic.deleting)
        config.update(topic.config or {})
        made += [
            NewTopic(
                name,
                num_partitions=topic.partitions or app.conf.topic_partitions,
                replication_factor=topic.replicas or app.conf.topic_replication_factor,
                topic_configs={key: str(value) for key, value in config.items()},
            )
            for name in topic.topics
        ]
    return made


async def _make(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> list[str]:
    """Makes ``topics``; returns "CREATE on topic 'x'" for each the cluster does not let
    this client make. Refuses, with :class:`ClusterRefuses`, a topic not made for any
    other reason but that it exists (another worker's start made it first)."""
    if not topics:
        return []
    response = await admin.create_topics(topics)
    _refuse_failed_creations(response.topic_errors, NOT_AUTHORIZED_TOPIC)
    return [
        f"CREATE on topic {name!r}"
        for name, code, *_ in response.topic_errors
        if code == NOT_AUTHORIZED_TOPIC
    ]


async def _check_rights(
    admin: AIOKafkaAdminClient,
    settings: StreamSettings,
    needs: dict[str, tuple[int, ...]],
    group: str | None = None,
    also_missing: Sequence[str] = (),
) -> None:
    """Refuses, with :class:`ClusterRefuses`, a client the cluster's ACLs do not let do
    its work (:mod:`detector.stream.rights`), naming every right missing, with
    ``also_missing`` (those found by other means) first."""
    missing = [*also_missing, *await missing_rights(admin, needs, group)]
    if missing:
        who = (
            f"user {settings.sasl_username!r}"
            if settings.security_protocol.startswith("SASL")
            else "this client"
        )
        raise ClusterRefuses(refusal(missing, who))


async def _ensure_topics(
    admin: AIOKafkaAdminClient,
    settings: StreamSettings,
    made_later: tuple[str, ...] = (),
    needed: tuple[str, ...] | None = None,
) -> set[str]:
    """Creates the SPEC topics with the configured partition counts and replication if
    they are missing. A replication over the cluster's broker count is refused with
    :class:`ClusterRefuses` (the broker's own answer names neither count nor setting)
    when there is a topic to make, here or, among ``made_later``, by Faust; so is a
    topic the cluster will not make (no CREATE right), which the Kafka client reports
    only as a missing topic, after its whole delivery timeout: of the client's
    ``needed`` topics (None: all), as the others are made only for convenience (``produce``
    makes the alerts topic that ``alerts`` then reads). Returns the topics this client
    saw before (those it may describe)."""
    existing = set(await admin.list_topics())
    wanted = [
        NewTopic(name, num_partitions=n, replication_factor=settings.replication)
        for name, n in (
            (settings.events_topic, settings.partitions),
            (settings.alerts_topic, settings.partitions),
            (settings.actions_topic, settings.partitions),
            (settings.dlq_topic, 1),
            *((topic, settings.partitions) for topic, _ in settings.vendor_inputs()),
        )
        if name not in existing
    ]
    # Only where a topic is still to be made: a restart while one broker of three is
    # down must not be refused.
    if wanted or not existing.issuperset(made_later):
        brokers = len((await admin.describe_cluster())["brokers"])
        if settings.replication > brokers:
            raise ClusterRefuses(
                f"a replication of {settings.replication} needs as many brokers and the "
                f"cluster has {brokers}: set SESSIONWATCH_REPLICATION to at most {brokers}"
            )
    if wanted:
        with contextlib.suppress(TopicAlreadyExistsError):  # another client won the race
            response = await admin.create_topics(wanted)
            errors = [  # (name, code, message) each; v0 no message
                error for error in response.topic_errors if needed is None or error[0] in needed
            ]
            hidden = [repr(name) for name, code, *_ in errors if code == NOT_AUTHORIZED_TOPIC]
            if hidden:  # or it exists, and this client may not even see it
                raise ClusterRefuses(
                    f"the cluster neither shows this client nor lets it create topic(s) "
                    f"{', '.join(hidden)}: if they exist, grant this client its rights on "
                    "them; if not, create them beforehand or grant CREATE (README: Kafka "
                    "rights)"
                )
            _refuse_failed_creations(errors)
    return existing


def _refuse_failed_creations(errors: Iterable[Any], *also_fine: int) -> None:
    """Refuses, with :class:`ClusterRefuses`, a CreateTopics answer's errors (name, code,
    and from v1 a message) but for none, a topic that exists already and ``also_fine``,
    naming each topic with the broker's error."""
    refused = [
        f"{name!r} ({for_code(code).__name__}{': ' + rest[0] if rest and rest[0] else ''})"
        for name, code, *rest in errors
        if code not in (0, TopicAlreadyExistsError.errno, *also_fine)
    ]
    if refused:
        raise ClusterRefuses(f"the cluster did not create {', '.join(refused)}")


def changelog_topic(settings: StreamSettings) -> str:
    """Where Faust keeps the state table's changelog (its naming: app id, table name)."""
    return f"{settings.app_id}-state-changelog"


async def _check_partitions(admin: AIOKafkaAdminClient, settings: StreamSettings) -> None:
    """Refuses, with :class:`TopicMismatch`, a worker whose partition count differs from
    existing input or changelog topics': the state table is partitioned like the input,
    so events of the partitions beyond the changelog's count could not keep state (Faust
    raises on each of their writes and the worker limps on). Topics made by ``produce``
    with another ``--partitions``, or an earlier deployment, are the usual cause."""
    # Vendor input topics may have any count: the normaliser re-keys their records onto
    # the input topic and keeps no state of its own.
    counts = await _partition_counts(admin, [settings.events_topic, changelog_topic(settings)])
    changelog = counts.pop(changelog_topic(settings), settings.partitions)
    wrong = {name: n for name, n in counts.items() if n != settings.partitions}
    if wrong:
        found = ", ".join(f"{name!r} has {n}" for name, n in sorted(wrong.items()))
        raise TopicMismatch(
            f"the worker is configured for {settings.partitions} partitions but {found}: "
            "set SESSIONWATCH_PARTITIONS (or --partitions) to the topics' count, the same "
            "on every worker (a topic's partitions cannot be reduced)"
        )
    if changelog != settings.partitions:
        raise TopicMismatch(
            f"the state changelog {changelog_topic(settings)!r} has {changelog} partitions, "
            f"the input {settings.partitions}: this app id's state was built for another "
            "count. Start under a new SESSIONWATCH_APP_ID (state is rebuilt from what the "
            "input still holds) or delete that changelog topic"
        )


#: The brokers' bounds on a group member's session timeout (milliseconds).
_SESSION_BOUNDS = ("group.min.session.timeout.ms", "group.max.session.timeout.ms")


async def _check_failover(admin: AIOKafkaAdminClient, settings: StreamSettings) -> None:
    """Refuses, with :class:`ClusterRefuses`, a failover outside what the brokers accept
    as a group session timeout: their JoinGroup answer is an error the Kafka client logs
    once, and the worker then stays up without partitions. A cluster that does not let
    this client read its configuration (no DescribeConfigs right, as on managed clusters)
    is not checked, and the log says what to look at if the worker then holds nothing."""
    try:
        brokers = (await admin.describe_cluster())["brokers"]
        wanted = dict.fromkeys(_SESSION_BOUNDS)
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(b["node_id"]), wanted) for b in brokers]
        )
    except KafkaError as exc:
        _failover_unchecked(settings, type(exc).__name__)
        return
    low, high = 0.0, float("inf")
    unread: list[int] = []  # brokers whose limits this client may not read
    for answer in answers:
        for resource in answer.to_object()["resources"]:
            if resource["error_code"]:
                unread.append(resource["error_code"])
                continue
            for entry in resource["config_entries"]:
                if entry["config_names"] in _SESSION_BOUNDS and entry["config_value"]:
                    ms = int(entry["config_value"]) / 1000
                    if entry["config_names"] == _SESSION_BOUNDS[0]:
                        low = max(low, ms)
                    else:
                        high = min(high, ms)
    if not low <= settings.failover_seconds <= high:
        raise ClusterRefuses(
            f"the brokers accept a group session timeout of {low:g}-{high:g} s "
            f"({_SESSION_BOUNDS[0]}, {_SESSION_BOUNDS[1]}), not the failover of "
            f"{settings.failover_seconds:g} s: set SESSIONWATCH_FAILOVER_SECONDS within it"
        )
    if unread:
        _failover_unchecked(settings, f"error code {unread[0]}")


def _failover_unchecked(settings: StreamSettings, why: str) -> None:
    log.warning(
        "the brokers' limits on a group session could not be read (%s; reading them "
        "needs the DescribeConfigs right on the cluster), so the failover of %g s is not "
        "checked against them. If this worker never holds a partition (sessionwatch_partitions_"
        "assigned 0, alert SessionwatchPartitionsUnwatched), set "
        "SESSIONWATCH_FAILOVER_SECONDS within the brokers' group.min.session.timeout.ms - "
        "group.max.session.timeout.ms",
        why,
        settings.failover_seconds,
    )


_LETTERS = msgspec.json.Encoder()


class _Deliveries:
    """What the broker confirmed, and the first event (in input order) it did not.
    aiokafka's ``flush`` waits for the sends but raises nothing: a batch that outlives the
    delivery timeout (no partition leader for that long) fails on its own, and later
    batches still go out."""

    def __init__(self) -> None:
        self.delivered = 0
        self.letters = 0  # dead letters delivered (not counted in ``delivered``)
        self.lost = 0
        # (input's index, line number, input's path, the error)
        self.first: tuple[int, int, str, BaseException] | None = None

    def watch(
        self, sent: asyncio.Future[Any], index: int, path: str, line: int, letter: bool = False
    ) -> None:
        sent.add_done_callback(
            lambda f: self.failed(
                asyncio.CancelledError() if f.cancelled() else f.exception(),
                index,
                path,
                line,
                letter,
            )
        )

    def failed(
        self, exc: BaseException | None, index: int, path: str, line: int, letter: bool = False
    ) -> None:
        """Counts one event's (or dead letter's) outcome (``exc`` None: confirmed)."""
        if exc is None:
            if letter:
                self.letters += 1
            else:
                self.delivered += 1
            return
        self.lost += 1
        if self.first is None or (index, line) < self.first[:2]:
            self.first = (index, line, path, exc)

    def failure(self, timeout: float) -> NotDelivered:
        assert self.first is not None
        _, line, path, exc = self.first
        name = "standard input" if path == "-" else path
        return NotDelivered(
            f"the broker did not confirm {self.lost} event(s) within {timeout:g} s (the "
            f"first: {name} line {line}: {type(exc).__name__}) and sending stopped there; "
            f"{self.delivered} were confirmed, some of them possibly from after that line. "
            "Check what the topic holds before sending the rest again; "
            "--delivery-timeout waits longer for a broker that restarts"
        )


async def produce(
    settings: StreamSettings,
    paths: Iterable[str],
    fingerprint: Fingerprinter,
    *,
    speed: float | None = None,
    rate: float | None = None,
    damaged: list[str] | None = None,
    refused: list[str] | None = None,
    delivery_timeout: float = DELIVERY_TIMEOUT_S,
) -> int:
    """Sends recorded events keyed by routing key; order per key is kept (idempotent producer).

    ``speed`` replays recorded time scaled (2.0 = twice as fast), but for events dated
    ahead of the host's clock (the worker refuses them), which go at once; ``rate`` sends
    at a fixed number of events per second; neither sends as fast as the broker takes them.
    Lines that do not decode are sent unkeyed, so the worker dead-letters them. An input
    that stops being readable (a cut gzip) is sent up to there, the reason added to
    ``damaged``. A line over the event size limit is never an event, and may be over the
    broker's message size (1 MB by default), which would stop the sending: it goes to
    the dead-letter topic from here, as replay would write it (the file and its line
    number), and ``refused`` gets "path line N". Returns the events delivered; an event
    the broker did not take within ``delivery_timeout`` stops the sending and raises
    :class:`NotDelivered`.
    """
    damaged = [] if damaged is None else damaged
    refused = [] if refused is None else refused
    await _prepare_produce(settings)
    producer = AIOKafkaProducer(
        **settings.aiokafka_kwargs(),
        acks="all",
        enable_idempotence=True,
        partitioner=KeyPartitioner(),  # every event keyed: the hash natively
        linger_ms=5,
        max_batch_size=1 << 20,
        # A batch's life in aiokafka: it fails once its partition has had no leader for
        # this long (the broker down); sends also wait this long for buffer space.
        request_timeout_ms=int(delivery_timeout * 1000),
    )
    deliveries = _Deliveries()
    first_ts: float | None = None
    try:
        await producer.start()
        # The topic's metadata before the clock starts: the first send would otherwise
        # wait for it (tens of ms on a busy host) after the pace was anchored, and the
        # first gap would come out short by that much.
        await producer.partitions_for(settings.events_topic)
        start_wall = time.monotonic()  # after the connection: pacing starts with sending
        sent = 0
        for index, path in enumerate(paths):
            if deliveries.first is not None:
                break
            with open_input(path) as fh:
                for number, line in enumerate(until_unreadable(fh, path, damaged), 1):
                    if deliveries.first is not None:
                        break  # later events would land past a gap in their key's order
                    line = line.strip()
                    if not line:
                        continue
                    ev = decode(line)
                    if type(ev) is InvalidEvent and ev.reason == "oversized":
                        source = "stdin" if path == "-" else path
                        letter = dead_letter(ev, line, source, number, fingerprint)
                        try:
                            pending = await producer.send(
                                settings.dlq_topic, value=_LETTERS.encode(letter)
                            )
                        except KafkaError as exc:
                            deliveries.failed(exc, index, path, number, letter=True)
                            break
                        deliveries.watch(pending, index, path, number, letter=True)
                        refused.append(f"{source} line {number}")
                        continue
                    key = routing_key(ev, fingerprint).encode() if type(ev) is Event else None
                    # An event the worker will refuse as dated ahead of the clock does
                    # not pace: one dated 2099 would hold the rest back for decades.
                    if speed and type(ev) is Event and not dated_ahead(ev.epoch, time.time()):
                        first_ts = ev.epoch if first_ts is None else first_ts
                        due = start_wall + (ev.epoch - first_ts) / speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    elif rate:
                        delay = start_wall + sent / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    try:
                        pending = await producer.send(settings.events_topic, value=line, key=key)
                    except KafkaError as exc:  # no room in the buffer for the timeout
                        deliveries.failed(exc, index, path, number)
                        break
                    deliveries.watch(pending, index, path, number)
                    sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    if deliveries.first is not None:
        raise deliveries.failure(delivery_timeout)
    return deliveries.delivered


async def read_alerts(
    settings: StreamSettings, out: IO[bytes], *, follow: bool = False, idle_s: float = 1.0
) -> int:
    """Prints session-alerts from the beginning; without ``follow``, stops at the end.

    A missing topic is an error without ``follow`` (nothing can be read: most likely a
    wrong name); with it, the client waits for a worker to create the topic. Subscribed
    to a missing topic, aiokafka would log an error ten times a second and wait forever.
    """
    async with _admin(settings) as admin:
        await _check_rights(admin, settings, {settings.alerts_topic: (READ,)})
    consumer = AIOKafkaConsumer(
        **settings.aiokafka_kwargs(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    count = 0
    try:
        await consumer.start()
        waiting = False
        while settings.alerts_topic not in await consumer.topics():
            if not follow:
                raise NoSuchTopic(
                    f"no topic {settings.alerts_topic!r} on {settings.bootstrap_servers}: a "
                    "worker creates it when it starts; check SESSIONWATCH_TOPIC_ALERTS"
                )
            if not waiting:
                log.info("waiting for topic %s to be created", settings.alerts_topic)
                waiting = True
            await asyncio.sleep(idle_s)
        consumer.subscribe([settings.alerts_topic])
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)  # no group: all partitions, once metadata is in
        tps = sorted(consumer.assignment())
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            for records in batches.values():
                for rec in records:
                    out.write(rec.value + b"\n")
                    count += 1
            out.flush()
            if not follow:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
    finally:
        await consumer.stop()
    return count


async def fetch_range(
    settings: StreamSettings, topic: str, partition: int, start: int | None, end: int
) -> tuple[int, list[tuple[int, bytes | None]]]:
    """The records of ``topic``/``partition`` from ``start`` to ``end - 1``, and ``start``.

    A plain consumer with no group (nothing committed, nothing rebalanced): the
    worker reads back records its stream skipped. Offsets that hold no record
    (transaction markers, compacted away) are simply not in the result. A ``start``
    of None means :func:`resume_offset`.
    """
    if start is None:
        start = await resume_offset(settings, topic, partition)
    records: list[tuple[int, bytes | None]] = []
    if start >= end:  # the usual answer for a generation's first event
        return start, records
    tp = TopicPartition(topic, partition)
    async with _plain_consumer(settings, tp) as consumer:
        consumer.seek(tp, start)
        deadline = time.monotonic() + 60.0
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}/{partition}: offsets {start}..{end - 1} not read")
            batches = await consumer.getmany(tp, timeout_ms=500)
            records.extend(
                (r.offset, r.value) for r in batches.get(tp, ()) if start <= r.offset < end
            )
    return start, records


async def partition_count(settings: StreamSettings, topic: str) -> int | None:
    """How many partitions the cluster says ``topic`` has now (None: it does not say)."""
    async with _admin(settings) as admin:
        return (await _partition_counts(admin, [topic])).get(topic)


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Each of ``names`` the cluster describes, with its partition count."""
    described = await admin.describe_topics(names)
    return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}


async def resume_offset(settings: StreamSettings, topic: str, partition: int) -> int:
    """Where the worker group resumes ``partition``: its committed offset, or the start
    of the log if it has committed none (the workers read from the earliest offset)."""
    tp = TopicPartition(topic, partition)
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(settings.app_id, partitions=[tp])
    finally:
        await admin.close()
    found = offsets.get(tp)
    if found is not None and found.offset >= 0:
        return int(found.offset)
    async with _plain_consumer(settings, tp) as consumer:
        return int((await consumer.beginning_offsets([tp]))[tp])


@contextlib.asynccontextmanager
async def _plain_consumer(
    settings: StreamSettings, tp: TopicPartition
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of ``tp`` alone, in no group."""
    consumer = AIOKafkaConsumer(
        **settings.aiokafka_kwargs(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        yield consumer
    finally:
        await consumer.stop()
