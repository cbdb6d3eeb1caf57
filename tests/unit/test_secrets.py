"""Session IDs are credentials: none may appear in alerts, dead letters, logs or state."""

from __future__ import annotations

import logging

import msgspec
import orjson
import pytest

from detector.cli import main
from tests.helpers import FIREFOX_LINUX, SID, SID2, SID3, Story, replay

IDS = [SID, SID2, SID3, "SESSION000042"]


def story() -> list[bytes]:
    s = Story()
    s.tx(0, sid=SID, user=None, guest=True)
    s.login(1, sid=SID2, previous_session_id=SID, session_hint=SID3)
    s.add("elevate", 2, session_id=SID2, new_session_id=SID3, user="alice")
    s.tx(3, sid=SID2, ip="185.1.1.1", user_agent=FIREFOX_LINUX)
    s.login(4, sid="SESSION000042", user="bob")
    lines = s.lines()
    lines += [
        b'{"event_id":"x1","ts":"bad","type":"login","session_id":"' + SID.encode() + b'"}',
        b'{"event_id":"x2","ts":1,"type":"transaction","sessionId":"' + SID2.encode() + b'" broken',
        b'{"event_id":"x3","ts":1,"type":"logout","session_id":"'
        + SID3.encode()
        + b'","pad":"'
        + b"p" * 5000
        + b'"}',
        b'{"event_id":"x4","ts":1,"type":"logout","pad":"'
        + b"p" * 4080
        + b'","session_id":"'
        + SID3.encode()
        + b'"}',
    ]
    return lines


def assert_clean(blob: bytes | str) -> None:
    text = blob if isinstance(blob, str) else blob.decode("utf-8", "replace")
    for sid in IDS:
        assert sid not in text
        assert sid[:16] not in text  # not even a prefix survives truncation


def test_alerts_dead_letters_and_state_hold_no_raw_id() -> None:
    alerts, dead, engine = replay(story())
    assert len(alerts) >= 4 and len(dead) == 4
    assert_clean(b"".join(msgspec.json.encode(a) for a in alerts))
    assert_clean(b"".join(msgspec.json.encode(d) for d in dead))
    store = engine.store
    assert_clean(msgspec.json.encode(store.sessions))  # type: ignore[attr-defined]
    assert_clean(orjson.dumps(list(store.sessions)))  # type: ignore[attr-defined]
    assert_clean(msgspec.json.encode(store.users))  # type: ignore[attr-defined]


def test_cli_output_and_logs_hold_no_raw_id(
    tmp_path: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "in.jsonl"  # type: ignore[operator]
    src.write_bytes(b"\n".join(story()) + b"\n")
    out, dlq = tmp_path / "a.jsonl", tmp_path / "d.jsonl"  # type: ignore[operator]
    with caplog.at_level(logging.DEBUG):
        assert (
            main(
                ["-v", "replay", str(src), "--alerts-out", str(out), "--dead-letter-out", str(dlq)]
            )
            == 0
        )
    assert out.read_bytes() and dlq.read_bytes()
    assert_clean(out.read_bytes())
    assert_clean(dlq.read_bytes())
    assert_clean(caplog.text)
    captured = capsys.readouterr()
    assert_clean(captured.out + captured.err)


def test_fingerprints_of_odd_ids() -> None:
    """A lone surrogate (a JSON escape) still hashes; the C fast path changes no digest."""
    import hashlib

    from detector.fingerprint import Fingerprinter

    fp = Fingerprinter(b"k" * 32)
    ref = hashlib.blake2b(key=b"k" * 32, digest_size=16, person=b"sw-session")
    for sid in ("9F3A1C7E", "é😀", "\udc80abc"):
        h = ref.copy()
        h.update(sid.encode("utf-8", "surrogatepass"))
        assert fp(sid) == h.hexdigest()
    assert fp("sw-fp:" + fp("x")) == fp("x")
