"""The command line as a user runs it: files, gzip, stdin, config errors, determinism."""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from detector.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl"
POLICY = ROOT / "examples" / "policy.toml"


def replay_to(tmp: Path, *inputs: str, name: str = "a.jsonl") -> bytes:
    out = tmp / name
    assert (
        main(
            [
                "replay",
                "-q",
                "--config",
                str(POLICY),
                "--alerts-out",
                str(out),
                "--dead-letter-out",
                str(tmp / "dlq.jsonl"),
                *inputs,
            ]
        )
        == 0
    )
    return out.read_bytes()


def test_same_input_gives_byte_identical_output(tmp_path: Path) -> None:
    a = replay_to(tmp_path, str(SAMPLE), name="a.jsonl")
    b = replay_to(tmp_path, str(SAMPLE), name="b.jsonl")
    assert a == b and a.count(b"\n") == 17


def test_gzip_input(tmp_path: Path) -> None:
    gz = tmp_path / "s.jsonl.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    assert replay_to(tmp_path, str(gz)) == replay_to(tmp_path, str(SAMPLE), name="b.jsonl")


def test_stdin_and_summary(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "detector.cli", "replay", "--config", str(POLICY), "-"],
        input=SAMPLE.read_bytes() + b"garbage\n",
        capture_output=True,
        cwd=tmp_path,
        check=True,
    )
    assert proc.stdout.count(b"\n") == 17
    assert b"events/s" in proc.stderr and b"not_json" in proc.stderr
    dlq = (tmp_path / "sessionwatch-dead-letters.jsonl").read_text()
    assert '"source":"stdin"' in dlq and '"offset":975' in dlq


def test_clean_run_leaves_no_dead_letter_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "detector.cli", "replay", "-q", str(SAMPLE)],
        capture_output=True,
        cwd=tmp_path,
        check=True,
    )
    assert proc.stdout and not (tmp_path / "sessionwatch-dead-letters.jsonl").exists()


def test_bad_config_is_refused_with_what_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[policy]\n"glide.ui.active.session.life_span" = 10\n')
    with pytest.raises(SystemExit) as info:
        main(["replay", "--config", str(cfg), str(SAMPLE)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "glide.ui.active.session.life_span" in err and "must be above" in err


def test_simulate_then_replay(tmp_path: Path) -> None:
    ev, lab = tmp_path / "e.jsonl", tmp_path / "l.jsonl"
    assert (
        main(
            [
                "simulate",
                "--users",
                "5",
                "--hours",
                "24",
                "--seed",
                "3",
                "-o",
                str(ev),
                "--labels-out",
                str(lab),
            ]
        )
        == 0
    )
    assert ev.read_bytes().count(b"\n") > 100 and lab.read_bytes().count(b"\n") >= 14


def test_no_broker_stops_the_clients_with_what_to_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens on port 1: a clear one-line reason and exit code 1, no traceback
    (a real refused connection; the security failures are tested on a real broker)."""
    monkeypatch.setenv("SESSIONWATCH_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("SESSIONWATCH_KEY", "k")
    assert main(["alerts"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect to Kafka at 127.0.0.1:1 over PLAINTEXT: no broker answered" in err
    assert "SESSIONWATCH_BOOTSTRAP_SERVERS" in err


@pytest.mark.parametrize(
    ("env", "argv", "says"),
    [
        (
            {"SESSIONWATCH_PARTITIONS": "eight"},
            ["worker"],
            "SESSIONWATCH_PARTITIONS must be a whole number, not 'eight'",
        ),
        ({"SESSIONWATCH_WEB_PORT": "70000"}, ["worker"], "web port 70000 must be 1-65535"),
        ({"SESSIONWATCH_BATCH_SIZE": "0"}, ["worker"], "batch size must be at least 1"),
        ({"SESSIONWATCH_BATCH_SIZE": "1e3"}, ["alerts"], "SESSIONWATCH_BATCH_SIZE must be"),
        (
            {"SESSIONWATCH_CHECKPOINT_SECONDS": "5s"},
            ["worker"],
            "SESSIONWATCH_CHECKPOINT_SECONDS must be a number, not '5s'",
        ),
        ({"SESSIONWATCH_CHECKPOINT_SECONDS": "-1"}, ["worker"], "must be 0-300 seconds"),
        ({"SESSIONWATCH_CHECKPOINT_SECONDS": "nan"}, ["worker"], "must be 0-300 seconds"),
        (
            {"SESSIONWATCH_FAILOVER_SECONDS": "3"},
            ["worker"],
            "failover must be 6-90 seconds (SESSIONWATCH_FAILOVER_SECONDS)",
        ),
        ({"SESSIONWATCH_FAILOVER_SECONDS": "120"}, ["worker"], "failover must be 6-90"),
        (
            {"SESSIONWATCH_SECURITY_PROTOCOL": "SSL", "SESSIONWATCH_SSL_CAFILE": "/no/ca.pem"},
            ["alerts"],
            "SESSIONWATCH_SSL_CAFILE '/no/ca.pem': no CA certificate",
        ),
        (
            {"SESSIONWATCH_SECURITY_PROTOCOL": "SSL", "SESSIONWATCH_SSL_CERTFILE": "/no/c.pem"},
            ["worker"],
            "SESSIONWATCH_SSL_CERTFILE '/no/c.pem' (SESSIONWATCH_SSL_KEYFILE none: in the same "
            "file): no client certificate and key read",
        ),
        (
            {"SESSIONWATCH_SSL_KEYFILE": "/no/c.key"},
            ["alerts"],
            "SESSIONWATCH_SSL_KEYFILE needs SESSIONWATCH_SSL_CERTFILE",
        ),
        (
            {"SESSIONWATCH_REPLICATION": "0"},
            ["alerts"],
            "replication must be at least 1 (SESSIONWATCH_REPLICATION)",
        ),
        (
            {"SESSIONWATCH_DELIVERY": "batch"},
            ["worker"],
            "delivery 'batch' must be fetch or stream (SESSIONWATCH_DELIVERY)",
        ),
    ],
)
def test_bad_streaming_settings_are_refused_before_connecting(
    env: dict[str, str],
    argv: list[str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused with the setting to fix and exit code 2, not a traceback from int() or from
    Faust's own checks (nothing listens on port 1: reaching the broker would fail later)."""
    monkeypatch.setenv("SESSIONWATCH_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("SESSIONWATCH_KEY", "k")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid streaming settings" in err and says in err


def test_a_data_directory_the_worker_cannot_write_is_refused_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Faust would find out after joining its group, with a traceback; the worker says
    which setting to fix and exits 2 (nothing listens on port 1)."""
    monkeypatch.setenv("SESSIONWATCH_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("SESSIONWATCH_KEY", "k")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as info:
        main(
            [
                "worker",
                "--config",
                str(ROOT / "examples" / "policy.toml"),
                "--data-dir",
                str(blocker / "data"),
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"the data directory '{blocker / 'data'}' cannot be used (Not a directory)" in err
    assert "SESSIONWATCH_DATA_DIR" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["replay", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl: No such file"),
        (["replay", "-q", str(SAMPLE), "/"], "cannot read /: Is a directory"),
        (["produce", str(SAMPLE), "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
        (["evaluate", str(SAMPLE), "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
        (["train", "-o", "m.skops", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
        (["import-policy", "/nonexistent.json"], "cannot read /nonexistent.json"),
        (["replay", "--metrics-port", "70000", str(SAMPLE)], "'70000' is not a port number"),
        (["worker", "--web-port", "0"], "'0' is not a port number (1-65535)"),
        (["produce", "--rate", "0", str(SAMPLE)], "'0' is not a positive number"),
        (["produce", "--speed", "-1", str(SAMPLE)], "'-1' is not a positive number"),
        (["produce", "--speed", "nan", str(SAMPLE)], "'nan' is not a positive number"),
        (
            ["replay", "--alerts-out", "/nonexistent/a.jsonl", str(SAMPLE)],
            "cannot write /nonexistent/a.jsonl: no directory /nonexistent",
        ),
        (["replay", "--dead-letter-out", "/", str(SAMPLE)], "cannot write /: it is a directory"),
        (["simulate", "-o", "/nonexistent/day.jsonl"], "no directory /nonexistent"),
        (["simulate", "--labels-out", "/nonexistent/l.jsonl"], "no directory /nonexistent"),
        (["train", "-o", "/nonexistent/m.skops", str(SAMPLE)], "no directory /nonexistent"),
        (["import-policy", "-o", "/nonexistent/p.toml", str(SAMPLE)], "no directory"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    argv: list[str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit code 2 and the argument to fix, not a traceback; ``produce`` in particular
    must not send its first files and then stop at a typo in the last (port 1: nothing
    listens, so reaching the broker would fail differently)."""
    monkeypatch.setenv("SESSIONWATCH_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("SESSIONWATCH_KEY", "k")
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and says in err


def _cut_gzip(tmp: Path, keep: float) -> tuple[Path, bytes]:
    """SAMPLE gzipped and cut short at ``keep`` of its bytes, and the complete lines a
    decompressor gets back from what is left."""
    packed = gzip.compress(SAMPLE.read_bytes())
    cut = packed[: int(len(packed) * keep)]
    path = tmp / "cut.jsonl.gz"
    path.write_bytes(cut)
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    return path, readable[: readable.rindex(b"\n") + 1]


def test_a_gzip_cut_short_is_replayed_up_to_the_cut_and_the_run_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every complete line before the cut is replayed (the same alerts as those lines
    replayed from a plain file), then exit code 1 and the reason, not a traceback."""
    cut, head = _cut_gzip(tmp_path, 0.6)
    assert head.count(b"\n") > 100
    plain = tmp_path / "head.jsonl"
    plain.write_bytes(head)
    expected = replay_to(tmp_path, str(plain), name="head-alerts.jsonl")
    assert expected  # the head has alerts to lose
    out = tmp_path / "cut-alerts.jsonl"
    code = main(
        [
            *("replay", "-q", "--config", str(POLICY), "--alerts-out", str(out)),
            *("--dead-letter-out", str(tmp_path / "dlq.jsonl"), str(cut)),
        ]
    )
    assert code == 1
    assert out.read_bytes() == expected
    err = capsys.readouterr().err
    assert f"input unreadable from some point on ({cut}: Compressed file ended" in err
    assert "Traceback" not in err


def test_a_file_named_gz_that_is_not_gzip_is_reported_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "events.jsonl.gz"
    fake.write_bytes(SAMPLE.read_bytes())
    assert main(["replay", "-q", "--alerts-out", str(tmp_path / "a.jsonl"), str(fake)]) == 1
    assert "Not a gzipped file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "import-policy", "train"])
def test_commands_that_need_an_input_whole_refuse_a_cut_one(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut, _ = _cut_gzip(tmp_path, 0.6)
    argv = {
        "evaluate": ["evaluate", str(cut), str(cut)],
        "import-policy": ["import-policy", str(cut)],
        "train": ["train", "-o", str(tmp_path / "m.skops"), str(cut)],
    }[command]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    assert "Compressed file ended before the end-of-stream marker" in capsys.readouterr().err
    assert not (tmp_path / "m.skops").exists()


def test_a_named_pipe_is_read_like_a_file(tmp_path: Path) -> None:
    """Inputs are checked before any work without being opened: opening and closing a
    pipe there would leave its writer with no reader (and the replay with no writer)."""
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)

    def write() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as out:
            out.write(SAMPLE.read_bytes())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    piped = subprocess.run(
        [sys.executable, "-m", "detector.cli", "replay", "-q", "--config", str(POLICY), str(fifo)],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    writer.join(10)
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == replay_to(tmp_path, str(SAMPLE))


@pytest.mark.parametrize(
    "bad",
    [b"not json\n", b"[1, 2]\n", b'{"event_id": "e1"}\n', b'{"event_id": 1, "indicator": "x"}\n'],
)
def test_evaluate_refuses_a_labels_file_that_is_not_labels(
    bad: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(b'{"event_id": "e0", "indicator": "ip_change"}\n\n' + bad)
    assert main(["evaluate", str(SAMPLE), str(labels)]) == 2
    err = capsys.readouterr().err
    assert f"{labels}:3 is not a label" in err and "Traceback" not in err


def test_the_settings_repr_shows_no_password_or_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A traceback or debug line that shows the settings must not show the secrets."""
    from detector.stream.settings import StreamSettings

    secrets = {
        "SESSIONWATCH_SASL_PASSWORD": "sasl-secret-1",
        "SESSIONWATCH_SSL_KEY_PASSWORD": "key-secret-2",
        "SESSIONWATCH_API_TOKEN": "token-secret-3",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = StreamSettings()
    assert settings.sasl_password == "sasl-secret-1"  # read, only not shown
    shown = repr(settings)
    assert "sasl_username" in shown
    assert not [v for v in secrets.values() if v in shown], shown
