"""The compiled routine-request path of replay and the worker (``native/``).

Replay spends most of its time on routine requests (a transaction on a live session
from its login's place and browser, within its timeouts), which the engine already
takes through a shortcut whose every condition negates one indicator's trigger. The
``sessionwatch_native`` extension is that shortcut compiled and applied to raw lines:
it decodes, fingerprints and checks each line against the engine's own state objects,
applies it when it is routine, and hands every other line back to the Python path.
Output is byte-identical either way (tested); only speed differs.

It applies to replay over the in-memory store. With a behaviour model on it also does
the model's per-request upkeep (counters of the session's window, the user's paths and
hours) and, when the one model is the offline forest, the checkpoints too (the window
closed, the feature row scored by the compiled forest) and the profile a plain login
opens, unless the score reaches the threshold: that alert is the Python path's.

The extension copies what it reads of a session once and writes its updates back
when something is about to read the session (:meth:`MemoryStore.defer_writes`: the
store asks before it hands a session out or a sweep reads it, and for all of them
before a census); the store tells it what the Python side wrote
(:meth:`MemoryStore.watch`), whose copies it then forgets.

The streaming worker uses it record by record (:func:`bundle_path`): there the state is
one routing key's bundle, which the worker's store loads for the record. The extension
writes a session's last activity back at once and the rest when the store asks for the
bundle's (``BundleStore.write_back``), and applies plain logins too (their rules read
only the user's sessions, which the bundle holds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from detector.anomaly import features
from detector.engine import Engine
from detector.indicators.weak_id import ENTROPY
from detector.metrics import Metrics
from detector.native import native_wanted
from detector.state import SessionState, UserState
from detector.store import MemoryStore, StateStore
from detector.useragent import classify, same_browser


class FastPath(Protocol):
    applied: int
    closed: int

    def run(self, lines: list[bytes], start: int, now: float) -> int: ...
    def flush_session(self, fp: str) -> bool: ...
    def flush_all(self) -> bool: ...
    def take_counts(self) -> tuple[list[int], float, int]: ...


class BundlePath(Protocol):
    """The compiled path as the worker uses it (see :func:`bundle_path`)."""

    applied: int
    closed: int

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
    def flush_bundle(self, sessions: dict[str, SessionState]) -> bool: ...
    def take_counts(self) -> tuple[list[int], float, int]: ...


#: What :meth:`BundlePath.bundle_line` returns: applied, or the Python path's after or
#: before the bundle was loaded.
APPLIED, LOADED, NOT_LOADED = 2, 1, 0


def fast_path(engine: Engine, lag_bounds: tuple[float, ...]) -> FastPath | None:
    """The compiled path for ``engine``, or None where it does not apply or is missing."""
    store = engine.store
    if not isinstance(store, MemoryStore):
        return None
    native = _native_for(engine)
    if native is None:
        return None
    checkpoints = _checkpoint_args(engine)
    path: FastPath = native.FastPath(
        *_path_args(
            engine,
            (store.sessions, store.users, store.filed_sessions, store.watch()),
            store.filed_users,
            checkpoints,
            _login_args(engine, store, checkpoints is not None),
            lag_bounds,
        )
    )
    store.defer_writes(path.flush_session, path.flush_all)
    return path


def bundle_path(engine: Engine, lag_bounds: tuple[float, ...]) -> BundlePath | None:
    """The compiled path for the streaming worker's engine (over a ``BundleStore``), or
    None where it does not apply or is missing.

    The worker hands it each record with a loader of the record's bundle: it reads the
    routing key from the raw record, has the store load that bundle (sweeps, re-delivery
    check and all, as for any record), and applies a routine transaction to the bundle's
    own objects, or hands the record back; a plain login likewise (its rules read only
    the user's sessions, which the bundle holds). A session's last activity is in its
    object when a record returns, the rest once the store asks (it is made the store's
    ``write_back``); copies of what it read are used again only while the bundle holds the
    same objects and the store has recorded no write of them (``BundleStore.watch``).
    """
    from detector.stream.bundle import BundleStore  # the worker's: not needed by replay

    store = engine.store
    native = _native_for(engine)
    if native is None or not isinstance(store, BundleStore):
        return None
    state: tuple[Any, ...] = ({}, {}, set(), store.watch())  # sessions, users: the bundle's
    checkpoints = _checkpoint_args(engine)
    login = _login_args(engine, store, checkpoints is not None)
    path: BundlePath = native.FastPath(
        *_path_args(engine, state, set(), checkpoints, login, lag_bounds)
    )
    return path


def _native_for(engine: Engine) -> Any:
    """The extension, if installed, wanted and of use for ``engine``'s rules."""
    return native_wanted() if engine.routine_shortcut else None


def add_counts(path: FastPath | BundlePath, metrics: Metrics) -> None:
    """Adds what ``path`` applied since the last call to ``metrics``: its events by type
    (transactions and logins) and their lags."""
    counts, lag_sum, logins = path.take_counts()
    applied = sum(counts)
    if applied:
        metrics.events["transaction"] += applied - logins
        metrics.events["login"] += logins
        lag_counts = metrics.lag.counts
        for bucket, k in enumerate(counts):
            lag_counts[bucket] += k
        metrics.lag.sum += lag_sum


def _path_args(
    engine: Engine,
    state: tuple[Any, ...],
    users_filed: set[str],
    checkpoints: tuple[Any, ...] | None,
    login: tuple[Any, ...] | None,
    lag_bounds: tuple[float, ...],
) -> tuple[Any, ...]:
    """``FastPath``'s arguments; ``state``: sessions, users, filed sessions, watch sets."""
    return (
        engine,
        engine.fingerprint.key,
        *state,
        engine.ladder.same_place,
        same_browser,
        list(engine.ladder.allow_ranges),
        engine.policy.trust_same_asn,
        None
        if engine.behaviour is None
        else (
            users_filed,
            features.path_shape,
            features.flush_hours,
            features.BURST_GAP_S,
            features.MAX_PATHS,
            features.THURSDAY_HOUR,
        ),
        checkpoints,
        login,
        engine.routine_limits,
        (engine.policy.ip_prefix_v4, engine.policy.ip_prefix_v6),
        list(lag_bounds),
    )


def _checkpoint_args(engine: Engine) -> tuple[Any, ...] | None:
    """What the compiled path needs to close windows and score rows itself: only for the
    offline forest alone (the online model learns from every row), compiled, and a
    scorer that records nothing (training and evaluation read its rows and scores)."""
    scorer = engine.behaviour
    if scorer is None or scorer.rows is not None or scorer.session_scores is not None:
        return None
    from detector.anomaly.offline import ONE_SIDED, OfflineModel  # numpy: only with a model

    if len(scorer.models) != 1 or not isinstance(scorer.models[0], OfflineModel):
        return None
    model = scorer.models[0]
    forest = model._compiled
    if forest.native is None or not all(x > 0.0 for x in model.spread):
        return None
    return (
        forest.native,
        forest._denominator,
        model.threshold,
        [float(x) for x in model.limit],
        [float(x) for x in model.spread],
        list(ONE_SIDED),
        features.SLOW,
        list(features._NEAR),
        features._KERNEL_SUM,
        (
            features.Baseline,
            features.Profile,
            classify,
            scorer.min_user_sessions,
            features.MAX_NETWORKS,
            features.MAX_BROWSERS,
        ),
    )


def _login_args(engine: Engine, store: StateStore, scores: bool) -> tuple[Any, ...] | None:
    """What the compiled path needs to apply plain logins itself (None: it leaves them);
    ``scores``: it scores checkpoints itself (a model on needs that for logins too)."""
    rules = engine.login_shortcut
    if rules is None or (engine.behaviour is not None and not scores):
        return None  # with a model on, logins need the checkpoint's scoring
    min_bits, concurrency = rules
    if min_bits is not None and ENTROPY is None:
        return None
    return (
        (SessionState, UserState, store.put_session, store.put_user),
        None if min_bits is None else (ENTROPY, min_bits),
        concurrency,
    )
