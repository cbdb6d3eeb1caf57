"""A Faust worker that does nothing: the floor of Faust's own per-event cost.

Same topic, same batching (``take_events``) and, with ``--table``, one table write per
event like the real worker, but no decoding and no detection. The streaming benchmark
runs it as a second baseline, so the report can tell Faust's cost from ours.

    python bench/faust_floor.py BOOTSTRAP TOPIC GROUP PARTITIONS DATADIR [--table]
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

import faust
from faust.streams import _current_event
from faust.worker import Worker


def main(argv: list[str]) -> None:
    bootstrap, topic_name, group, partitions, datadir = argv[:5]
    with_table = "--table" in argv
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

    worker = Worker(app, loglevel="warning", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
