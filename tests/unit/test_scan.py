"""The local table's scan after a rebalance, on Faust's own RocksDB: read a chunk at a
time with writes and deletes in between, as the worker interleaves them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as RocksDBStore

from detector.stream import changelog
from detector.stream.bundle import MappingIO


def test_a_rocksdb_scan_sees_each_live_entry_once_across_writes_between_steps(
    tmp_path: Path,
) -> None:
    chunk = changelog.SCAN_CHUNK
    dbs = [RocksDBOptions().open(tmp_path / f"p{p}.db") for p in range(2)]
    for p, db in enumerate(dbs):
        for i in range(2 * chunk + 7):
            db[f"k{p}-{i:04d}".encode()] = b"v0"
        db[RocksDBStore.offset_key] = b"123"  # Faust's persisted offset: not an entry
    store = SimpleNamespace(offset_key=RocksDBStore.offset_key, _dbs_for_actives=lambda: dbs)
    scan = changelog._scan_rocksdb(store)  # type: ignore[arg-type]
    seen: dict[bytes, bytes] = {}
    end_of_first_step = sorted(dbs[0].keys())[chunk - 1]  # the offset key sorts first
    for key, value in scan:
        assert key not in seen
        seen[key] = value
        if key == end_of_first_step:  # between two steps, as the worker writes
            del dbs[0][key]  # the last key read: the next step starts after it anyway
            del dbs[0][f"k0-{chunk + 3:04d}".encode()]  # not reached yet: never comes
            dbs[0][f"k0-{chunk + 5:04d}".encode()] = b"v1"  # comes as it is now
            dbs[1][b"k1-0000"] = b"v1"  # another partition's, not reached yet
    expected = {f"k{p}-{i:04d}".encode() for p in range(2) for i in range(2 * chunk + 7)}
    assert set(seen) == expected - {f"k0-{chunk + 3:04d}".encode()}
    assert seen[f"k0-{chunk + 5:04d}".encode()] == b"v1" and seen[b"k1-0000"] == b"v1"
    assert sum(v == b"v0" for v in seen.values()) == len(seen) - 2
    for db in dbs:
        db.close()


def test_a_mapping_scan_lists_its_keys_once_and_reads_each_when_reached() -> None:
    table = {b"a": b"1", b"b": b"2", b"c": b"3"}
    scan = MappingIO(table).scan()
    assert next(scan) == (b"a", b"1")
    del table[b"b"]
    table[b"c"] = b"new"
    table[b"d"] = b"4"  # written after the listing: indexed when written instead
    assert list(scan) == [(b"c", b"new")]
