"""Vendor exports come as NDJSON, a JSON array, a ServiceNow-style ``{"result": [...]}``
document or a CSV list export (header row first); this turns any of them into SPEC.md
lines for the replay loop."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO

import orjson

from detector.adapters import record_type


def records(fh: BinaryIO) -> Iterator[bytes]:
    """One raw JSON record per item, whatever the framing."""
    head = fh.peek(1 << 16)[: 1 << 16] if hasattr(fh, "peek") else b""
    first = head.lstrip().removeprefix(b"\xef\xbb\xbf")[:1]
    if first and first not in b"[{":
        yield from _csv_rows(fh)
        return
    document = first == b"["
    if first == b"{":
        line = head.lstrip().split(b"\n", 1)[0]
        try:
            parsed = orjson.loads(line)
            document = isinstance(parsed, dict) and isinstance(parsed.get("result"), list)
        except orjson.JSONDecodeError:
            document = True  # a pretty-printed document
    if not document:
        yield from fh
        return
    data = fh.read()
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        yield data  # one bad document: dead-lettered as not_json
        return
    items = doc.get("result") if isinstance(doc, dict) and "result" in doc else doc
    for item in items if isinstance(items, list) else [items]:
        yield orjson.dumps(item)


def to_spec_lines(
    raw: Iterable[bytes],
    convert: Callable[[Mapping[str, Any]], dict[str, Any] | None],
    unmapped: Counter[str],
) -> Iterator[bytes]:
    """SPEC.md lines, one per input record (an empty line for a skipped one, so that
    line numbers in dead letters still count input records)."""
    for line in raw:
        if not line.strip():
            yield b""
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield line  # refused downstream as not_json, with the original text
            continue
        if not isinstance(record, dict):
            yield line
            continue
        event = convert(record)
        if event is None:
            unmapped[record_type(record)] += 1
            yield b""
            continue
        yield orjson.dumps(event)


def _csv_rows(fh: BinaryIO) -> Iterator[bytes]:
    """A CSV export with a header row: one JSON object per data row (empty cells absent)."""
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")
    try:
        for row in csv.DictReader(text):
            yield orjson.dumps({k: v for k, v in row.items() if k and v not in (None, "")})
    finally:
        text.detach()
