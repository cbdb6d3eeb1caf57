"""Vendor log formats in, OCSF out: platform records mapped onto SPEC.md events.

An adapter turns one parsed input record (a dict) into a SPEC.md event dict, or
``None`` when the record's type has no meaning for session detection (counted by
type and skipped, not dead-lettered). The mapped event then goes through the same
strict decoding as native input, so a mapped record with a bad IP or time is
dead-lettered with SPEC.md's reason codes, carrying the *original* record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from detector.adapters import ocsf, okta, servicenow
from detector.adapters.common import record_type

Record = Mapping[str, Any]
Convert = Callable[[Record], dict[str, Any] | None]

#: ``--format`` values and their converters; ``spec`` is SPEC.md's own format.
ADAPTERS: dict[str, Convert] = {
    "okta": okta.convert,
    "ocsf": ocsf.convert,
    "servicenow-transactions": servicenow.convert_transaction,
    "servicenow-events": servicenow.convert_event,
}
FORMATS = ("spec", *ADAPTERS)
__all__ = ["ADAPTERS", "FORMATS", "Convert", "Record", "record_type"]
