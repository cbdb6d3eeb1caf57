"""``deploy/kafka/broker.py start``, the broker people run by hand or under a supervisor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_broker_script_stops_on_sigterm_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """Supervisors (systemd, CI runners, ``kill``) stop with SIGTERM, not Ctrl-C: the
    broker goes with the script and its storage is removed, as on Ctrl-C."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "KAFKA_PORT": str(port), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy" / "kafka" / "broker.py"), "start"],
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"127.0.0.1:{port}".encode()  # it answers
        assert len(list(tmp_path.glob("sessionwatch-kafka-*"))) == 1  # its storage
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert list(tmp_path.glob("sessionwatch-kafka-*")) == []
        with pytest.raises(OSError):  # the broker itself is gone too
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
