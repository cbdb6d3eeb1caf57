"""Vendor logs read from Kafka: an Okta topic fed by kcat (unkeyed, as a log shipper
would) is normalised onto session-events and gives replay --format okta's alerts."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.adapters import ADAPTERS
from detector.adapters.framing import records, to_spec_lines
from detector.alerts import Alert
from detector.engine import Engine
from detector.fingerprint import Fingerprinter
from detector.policy import Policy
from detector.replay import Replayer
from detector.simulate import Simulation
from tests.integration.streaming import (
    KEY,
    POLICY,
    Factory,
    alert_ids,
    create_topic,
    free_port,
    produce_in_transactions,
    send_tombstone,
)
from tests.tools import samples, scrape, tool, total
from tests.vendors import okta_expressible, to_okta

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("producer", ["kcat", "transactions"])
def test_okta_topic_is_normalised_and_detected(
    deployment_factory: Factory, tmp_path: Path, producer: str
) -> None:
    """``transactions``: the vendor topic is written in transactions, so its offsets have
    holes (commit markers) that the normaliser reads back and steps over."""
    buf = io.BytesIO()
    Simulation(users=30, hours=24, seed=3).write(buf)
    events = [orjson.loads(x) for x in buf.getvalue().splitlines()]
    okta = b"".join(orjson.dumps(to_okta(e)) + b"\n" for e in events if okta_expressible(e))
    okta += b"not json at all\n" + orjson.dumps({"eventType": "user.mfa.factor.activate"}) + b"\n"
    src = tmp_path / "okta.ndjson"
    src.write_bytes(okta)
    found: list[Alert] = []
    replayer = Replayer(
        Engine(Policy.load(POLICY), Fingerprinter(KEY.encode())), found.append, lambda d: None
    )
    with open(src, "rb") as fh:
        replayer.feed(to_spec_lines(records(fh), ADAPTERS["okta"], replayer.summary.unmapped), "x")
    expected = {a.alert_id for a in found}
    assert len(expected) > 5

    d = deployment_factory(4)
    topic = f"okta-{uuid.uuid4().hex[:8]}"
    # One partition keeps each user's records in order (or key them by user).
    if producer == "kcat":
        asyncio.run(create_topic(d.bootstrap, topic, 1))
    else:
        lines = okta.splitlines()
        asyncio.run(produce_in_transactions(d.bootstrap, topic, 1, lines, [None] * len(lines), 40))
    d.env["SESSIONWATCH_INPUT_TOPICS"] = f"{topic}:okta"
    web = free_port()
    d.start_worker(web_port=web)
    if producer == "kcat":
        subprocess.run(
            [tool("kcat"), "-b", d.bootstrap, "-P", "-t", topic, "-l", str(src)],
            check=True,
            timeout=60,
        )
    asyncio.run(send_tombstone(d.bootstrap, topic, b"okta"))  # a record with no value
    got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=180)
    assert alert_ids(got) == expected, d.logs()
    dlq = d.collect(d.topics["dlq"], lambda v: len(v) >= 2, timeout=30)
    letters: list[dict[str, Any]] = [json.loads(v) for v in dlq]
    assert [(x["reason"].split(":")[0], x["source"]) for x in letters] == [
        ("not_json", f"{topic}/0")
    ] * 2
    assert "has no value" in letters[1]["reason"]
    metrics = samples(scrape(f"http://127.0.0.1:{web}/metrics"))
    assert metrics[("sessionwatch_unmapped_records_total", (("format", "okta"),))] == 1
    if producer == "transactions":
        assert total(metrics, "sessionwatch_delivery_holes_total") >= 1, metrics
