from collections.abc import Callable
from typing import Any

ABI: int

class FastPath:
    applied: int
    closed: int
    def __init__(
        self,
        engine: Any,
        key: bytes,
        sessions: dict[str, Any],
        users: dict[str, Any],
        filed: set[str],
        written: tuple[set[str], set[str]],
        same_place: Callable[[str, str], bool],
        same_browser: Callable[[str, str], bool],
        allow: list[tuple[int, int, int]],
        trust_same_asn: bool,
        behaviour: tuple[
            set[str], Callable[[str], str], Callable[[Any, Any], None], float, int, int
        ]
        | None,
        checkpoints: tuple[
            Forest,
            float,
            float,
            list[float],
            list[float],
            list[int],
            float,
            list[tuple[int, int]],
            float,
            tuple[Any, Any, Callable[[str], tuple[str, str]], int, int, int],
        ]
        | None,
        login: tuple[
            tuple[Any, Any, Callable[[str, Any], None], Callable[[str, Any], None]],
            tuple[Entropy, float] | None,
            tuple[int, float, float, float] | None,
        ]
        | None,
        timeouts: tuple[float, float, float, float, float],
        prefixes: tuple[int, int],
        lag_bounds: list[float],
    ) -> None: ...
    def run(self, lines: list[bytes], start: int, now: float) -> int: ...
    def bundle_line(
        self,
        line: bytes,
        load: Callable[[str, float, Any, Any], Any],
        msg: Any,
        token: Any,
        now: float,
    ) -> int: ...
    def bundle_run(
        self,
        records: list[Any],
        start: int,
        load: Callable[[str, float, Any, Any], Any],
        token: Any,
        now: float,
        view: tuple[tuple[Any, ...], tuple[float, float, float, float]] | None = None,
    ) -> tuple[int, int]: ...
    def flush_session(self, fp: str) -> bool: ...
    def flush_all(self) -> bool: ...
    def flush_bundle(self, sessions: dict[str, Any]) -> bool: ...
    def take_counts(self) -> tuple[list[int], float, int]: ...
    def cached(self) -> int: ...
    def fingerprint_of(self, session_id: str) -> str: ...
    @staticmethod
    def parse_time(text: str) -> float | None: ...
    @staticmethod
    def read_line(text: str, fast: bool) -> str | None: ...
    @staticmethod
    def path_shape(url: str) -> str | None: ...
    @staticmethod
    def place_key(
        ip: str, allow: list[tuple[int, int, int]], prefix_v4: int, prefix_v6: int
    ) -> bytes | None: ...
    @staticmethod
    def hour_of_week(ts: float, thursday: int) -> int: ...

class Entropy:
    def __init__(self, xlog2x: list[float], log2: list[float], predictable: float) -> None: ...
    def bits(self, sid: str) -> float | None: ...

class Forest:
    def __init__(
        self,
        feature: list[int],
        threshold: list[float],
        left: list[int],
        right: list[int],
        value: list[float],
        roots: list[int],
        depth: int,
    ) -> None: ...
    def path_sum(self, row: list[float]) -> float: ...

class Tally:
    """The census tally of ``detector.stream.bundle.Tally``, with ``Engine.active_until``
    reckoned from ``Engine.active_terms()``."""

    def __init__(self, terms: tuple[float, float, float, float, float, float]) -> None: ...
    def clear(self) -> None: ...
    def set(self, key: bytes, bundle: Any | None) -> None: ...
    def counts(self, now: float) -> tuple[int, int, int, int, int]: ...
    def heap_len(self) -> int: ...

class Record:
    """A fetched Kafka record, with the Kafka client's ``ConsumerRecord`` attributes."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    checksum: None
    serialized_key_size: int
    serialized_value_size: int
    headers: tuple[tuple[str, bytes | None], ...]

def decode_batches(
    buffer: bytes, fetch_offset: int, check_crcs: bool, topic: str, partition: int
) -> tuple[list[Record], int] | None: ...
def murmur2(data: bytes) -> int: ...
