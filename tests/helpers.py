"""Small builders so a test reads as a story of events and the alerts it must raise."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from detector.alerts import Alert
from detector.deadletter import DeadLetter
from detector.engine import Engine
from detector.fingerprint import Fingerprinter
from detector.policy import Policy
from detector.replay import Replayer

T0 = 1_795_334_400.0  # 2026-11-22T08:00:00Z
SID = "9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E"
SID2 = "4B7E0C2A9D1F83E65A0B7C4D2E9F1A38"
SID3 = "C3D9A1E7F05B2864D1C7E3A9B5F02D6E"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
CHROME_NEXT = CHROME.replace("Chrome/120", "Chrome/121")
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
KEY = b"test-key-0123456789abcdef0123456789"


class Story:
    """Appends events at minute offsets from T0, numbering them e1, e2, ..."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, minute: float, **fields: Any) -> str:
        event_id = f"e{len(self.events) + 1}"
        ev: dict[str, Any] = {"event_id": event_id, "ts": T0 + minute * 60, "type": kind}
        ev.update(fields)
        self.events.append(ev)
        return event_id

    def login(self, minute: float, sid: str = SID, user: str = "alice", **kw: Any) -> str:
        kw.setdefault("ip", "10.1.2.3")
        kw.setdefault("user_agent", CHROME)
        return self.add("login", minute, session_id=sid, user=user, **kw)

    def tx(self, minute: float, sid: str = SID, user: str | None = "alice", **kw: Any) -> str:
        kw.setdefault("ip", "10.1.2.3")
        kw.setdefault("user_agent", CHROME)
        if user is not None:
            kw["user"] = user
        return self.add("transaction", minute, session_id=sid, **kw)

    def lines(self) -> list[bytes]:
        return [orjson.dumps(e) for e in self.events]


def policy(config: Mapping[str, Any] | None = None) -> Policy:
    return Policy.from_mapping(config or {})


def replay(
    lines: Iterable[bytes], config: Mapping[str, Any] | None = None
) -> tuple[list[Alert], list[DeadLetter], Engine]:
    alerts: list[Alert] = []
    dead: list[DeadLetter] = []
    engine = Engine(policy(config), Fingerprinter(KEY))
    Replayer(engine, alerts.append, dead.append).feed(lines, "test")
    return alerts, dead, engine


def run(story: Story, config: Mapping[str, Any] | None = None) -> list[Alert]:
    alerts, dead, _ = replay(story.lines(), config)
    assert not dead, dead
    return alerts


def raised(story: Story, config: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(indicator, event_id) of every alert, in emission order."""
    return [(a.kind, a.event_id) for a in run(story, config)]


def decoded_records(topic: str, partition: int, run: list[tuple[int, bytes | None]]) -> list[Any]:
    """A run of (offset, value) as the worker gets it from a fetch by default: one record
    batch (the client's own builder, as a broker returns it) decoded by the extension
    (``detector.stream.fetch``)."""
    import sessionwatch_native
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    base = run[0][0]
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=2**24,
    )
    for offset, value in run:
        builder.append(offset - base, timestamp=0, key=None, value=value, headers=[])
    batch = bytearray(builder.build())
    batch[0:8] = base.to_bytes(8, "big")
    out = sessionwatch_native.decode_batches(bytes(batch), base, True, topic, partition)
    assert out is not None
    assert [r.offset for r in out[0]] == [offset for offset, _ in run]
    return out[0]
