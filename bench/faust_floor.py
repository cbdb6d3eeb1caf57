"""A Faust worker that does nothing: the floor of Faust's own per-event cost.

Same topic, same batching (``take_events``) and, with ``--table``, one table write per
event like the real worker, but no decoding and no detection. The streaming benchmark
runs it as a second baseline, so the report can tell Faust's cost from ours.

``--direct`` is instead the worker's own transport with nothing behind it: its Faust
consumer (``detector.stream.app``'s fetch, delivery straight from the fetch in chunks,
flow control, acks of whole runs, Faust's commits), each record acked as soon as it
arrives. Once ``EVENTS`` have come it prints how many it took and the seconds from the
first to the last: the most the worker could reach through Faust on this machine if
decoding, detection and state cost nothing.

    python bench/faust_floor.py BOOTSTRAP TOPIC GROUP PARTITIONS DATADIR [--table | --direct EVENTS]
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TP
from faust.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> None:
    bootstrap, topic_name, group, partitions, datadir = argv[:5]
    with_table = "--table" in argv
    direct = "--direct" in argv
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        datadir=datadir,
        store="rocksdb://",
        topic_partitions=int(partitions),
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, value_serializer="raw")
    table = app.Table("floor", key_type=bytes, value_type=bytes, partitions=int(partitions))

    @app.agent(topic, concurrency=1)
    async def floor(stream: Any) -> None:
        async for batch in stream.take_events(500, within=0.01):
            if with_table:
                for event in batch:
                    # stock Faust: a table write goes to the current event's partition
                    _current_event.set(weakref.ref(event))
                    table[event.key or b"-"] = event.value

    if direct:
        # Importing the worker's app module installs its consumer (fetch, delivery, acks).
        from detector.stream.app import direct_delivery

        expect = int(argv[argv.index("--direct") + 1])
        seen = 0
        first = 0.0

        def take(chunk: list[tuple[TP, list[Any]]], generation: int) -> None:
            # Timed here, from the first record taken to the last: commits are samples
            # 2.8 s apart, too coarse for a run this fast.
            nonlocal seen, first
            ack_offsets = app.consumer.ack_offsets  # type: ignore[attr-defined]
            if not seen:
                first = time.perf_counter()
            for tp, records in chunk:
                ack_offsets(tp, [record.offset for record in records])
                seen += len(records)
            if seen >= expect:  # to the pipe itself: Faust's worker logs what is printed
                os.write(1, f"{seen} {time.perf_counter() - first:.6f}\n".encode())

        deliver = direct_delivery(app, take, lambda seconds: None)
        app.sessionwatch_direct = {topic_name: deliver}  # type: ignore[attr-defined]

    worker = Worker(app, loglevel="warning", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
