"""The offline model: a scikit-learn IsolationForest trained on recorded traffic.

An isolation forest needs no labels (attacks in recorded logs are rare and
unknown) and scores a row by how few random splits isolate it. It is frozen once
trained, so a step's score is a pure function of its features: replay and every
streaming worker agree on it whatever the partitioning.

Models are stored with skops, never pickle: loading a pickle runs whatever code
the file names. :func:`load` lists the types a file would build and refuses any
outside :data:`TRUSTED` (the forest's tree type; skops trusts plain numpy and
scikit-learn types itself), then checks that the file is a sessionwatch model
for exactly these features. A config may also pin the file's SHA-256.

Scoring needs the trees' arrays, not scikit-learn: importing it (and skops' list
of every estimator it trusts) takes ~3 s, longer than replaying a million events.
So :func:`load` first reads the file itself: the skops schema is JSON and every
array is a ``.npy`` file, read with ``allow_pickle=False``; nothing is built but
dicts, lists and arrays, and any type beyond the forest's own makes it hand the
file to skops, which applies its checks above. Training and exact comparisons
with scikit-learn (``score_many``) load the real forest (``full=True``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from detector.anomaly.base import Contribution, ModelError, contributions
from detector.anomaly.features import FEATURES
from detector.native import native_module

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

#: What a model file says it is; bump when features or their meaning change.
FORMAT: Final = "sessionwatch-behaviour/2"
#: Types beyond skops' defaults that a model file may contain.
TRUSTED: Final = ("sklearn.tree._tree.Tree",)


@dataclass(frozen=True)
class TreeArrays:
    """One fitted tree: children (-1 at leaves), split feature and threshold, depth."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    max_depth: int


@dataclass(frozen=True)
class ForestParts:
    """What scoring needs of a fitted IsolationForest, without scikit-learn objects."""

    trees: list[TreeArrays]
    columns: list[np.ndarray]  # estimators_features_: each tree's feature subset
    path_lengths: list[np.ndarray]  # _decision_path_lengths: depth of each node
    average_path_lengths: list[np.ndarray]  # _average_path_length_per_tree: per node
    max_samples: int

    @classmethod
    def of(cls, forest: IsolationForest) -> ForestParts:
        trees = [
            TreeArrays(
                e.tree_.children_left,
                e.tree_.children_right,
                e.tree_.feature,
                e.tree_.threshold,
                int(e.tree_.max_depth),
            )
            for e in forest.estimators_
        ]
        return cls(
            trees,
            [np.asarray(c) for c in forest.estimators_features_],
            list(forest._decision_path_lengths),
            list(forest._average_path_length_per_tree),
            int(forest._max_samples),
        )


def _check_tree(tree: TreeArrays, columns: np.ndarray, depths: int) -> None:
    """Refuses a tree whose indices point outside it (a damaged or crafted file)."""
    n = len(tree.left)
    ok = (
        n > 0
        and len(tree.right) == len(tree.feature) == len(tree.threshold) == depths == n
        and bool(np.all((tree.left == -1) | ((tree.left > 0) & (tree.left < n))))
        and bool(np.all((tree.left == -1) == (tree.right == -1)))
        and bool(np.all((tree.right == -1) | ((tree.right > 0) & (tree.right < n))))
        and bool(np.all((tree.left == -1) | ((tree.feature >= 0) & (tree.feature < len(columns)))))
        and bool(np.all((columns >= 0) & (columns < len(FEATURES))))
    )
    if not ok:
        raise ModelError("the model's trees are malformed (indices outside the tree)")
    if not _is_tree(tree.left, tree.right, tree.max_depth):
        raise ModelError(
            "the model's trees are malformed (a node reached twice or not at all, "
            "or deeper than the tree's max_depth)"
        )


def _is_tree(left: np.ndarray, right: np.ndarray, max_depth: int) -> bool:
    """Every node but node 0 has one parent, and all are reached from node 0 within
    ``max_depth`` steps (the walks take that many steps, and the compiled one relies
    on it). Children are in range (checked before)."""
    n = len(left)
    inner = left != -1
    parents = np.bincount(np.concatenate([left[inner], right[inner]]), minlength=n)
    if parents[0] != 0 or not bool(np.all(parents[1:] == 1)):
        return False
    # One parent each: a walk down from node 0 meets no node twice.
    level, reached = np.zeros(1, dtype=np.int64), 1
    for _ in range(max(max_depth, 0)):
        below = level[inner[level]]
        level = np.concatenate([left[below], right[below]])
        reached += len(level)
    return reached == n and not bool(inner[level].any())


#: The compiled walk packs a node's place into 24 bits; a larger forest (far beyond any
#: IsolationForest we train) is walked by numpy.
NATIVE_MAX_NODES: Final = 2**24 - 2


class CompiledForest:
    """The whole forest as flat numpy arrays, walked one level at a time: ~0.07 ms a row
    (native/ walks a packed copy of it in ~5 µs).

    scikit-learn's ``score_samples`` costs ~10 ms per call whatever the batch size,
    and the engine scores one step at a time (so a step's alert is raised with its
    event, which is what at-least-once streaming and replay equality need). Here
    every tree advances one level per numpy operation; a leaf points to itself, so
    ``depth`` rounds reach every leaf. The result is scikit-learn's: features
    compared as float32, a leaf worth its depth plus the expected depth of the
    samples it still holds.
    """

    def __init__(self, forest: ForestParts) -> None:
        features, thresholds, lefts, rights, values, roots = [], [], [], [], [], []
        offset = depth = 0
        for t, (tree, columns) in enumerate(zip(forest.trees, forest.columns, strict=True)):
            _check_tree(tree, columns, len(forest.path_lengths[t]))
            leaf = tree.left == -1
            here = np.arange(len(tree.left))
            features.append(np.where(leaf, 0, columns[np.maximum(tree.feature, 0)]))
            thresholds.append(np.where(leaf, np.inf, tree.threshold))
            lefts.append(np.where(leaf, here, tree.left) + offset)
            rights.append(np.where(leaf, here, tree.right) + offset)
            values.append(forest.path_lengths[t] + forest.average_path_lengths[t] - 1.0)
            roots.append(offset)
            offset += len(tree.left)
            depth = max(depth, tree.max_depth)
        self._feature = np.concatenate(features)
        self._threshold = np.concatenate(thresholds)
        self._left = np.concatenate(lefts)
        self._right = np.concatenate(rights)
        self._value = np.concatenate(values)
        self._roots = np.asarray(roots)
        self._depth = depth
        self._denominator = len(roots) * _average_path_length(forest.max_samples)
        native = native_module()
        #: The compiled forest (native/), when built; replay's checkpoints walk it too.
        self.native: Any = None
        if native is not None and len(self._feature) < NATIVE_MAX_NODES:
            try:
                self.native = native.Forest(
                    self._feature.tolist(),
                    self._threshold.tolist(),
                    self._left.tolist(),
                    self._right.tolist(),
                    self._value.tolist(),
                    self._roots.tolist(),
                    self._depth,
                )
            except ValueError as err:  # _check_tree lets nothing through that gets here
                raise ModelError(f"the model's trees are malformed ({err})") from err
        self._native_sum: Callable[[list[float]], float] | None = (
            None if self.native is None else self.native.path_sum
        )

    def path_sum(self, row: Sequence[float]) -> float:
        """The row's path lengths over all trees, added in tree order (one order for the
        numpy walk and the compiled one, ~15x faster, so the same double)."""
        if self._native_sum is not None:
            return self._native_sum(list(row))
        x = np.asarray(row, dtype=np.float32).astype(np.float64)
        feature, threshold, left, right = self._feature, self._threshold, self._left, self._right
        node = self._roots
        for _ in range(self._depth):
            node = np.where(x[feature[node]] <= threshold[node], left[node], right[node])
        return float(np.cumsum(self._value[node])[-1])

    def score(self, row: Sequence[float]) -> float:
        """The anomaly score of the original paper, in (0, 1): 0.5 ordinary, near 1 odd."""
        if not self._denominator:
            return 1.0
        return float(2.0 ** (-self.path_sum(row) / self._denominator))


def _raised(forest: float, excess: float) -> float:
    """The forest's score, each unit of excess halving its distance to 1."""
    return 1.0 - (1.0 - forest) * 2.0**-excess if excess else forest


def _average_path_length(n: int) -> float:
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n


#: Features where only high values are suspicious (see features.py), and so where a
#: value beyond anything seen in training is evidence in itself.
ONE_SIDED: Final = tuple(
    FEATURES.index(f)
    for f in ("pace", "burstiness", "new_paths", "hour_rarity", "start_rarity", "volume")
)


@dataclass
class OfflineModel:
    """A fitted forest with the threshold and feature statistics chosen at training.

    An isolation forest cannot extrapolate: a request rate fifty times anything in
    training isolates no faster than the fastest training session. So a step's
    score is the forest's, raised by its *excess*: how far its one-sided features
    lie beyond their largest training value (``limit``), in units of their
    training spread; each unit halves the distance to 1. Inside the training
    range the score is the forest's alone.
    """

    parts: ForestParts
    threshold: float
    center: list[float]
    spread: list[float]
    limit: list[float]
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = "offline"
    #: scikit-learn's own forest: after training, or ``load(..., full=True)``.
    forest: IsolationForest | None = None

    def __post_init__(self) -> None:
        self._compiled = CompiledForest(self.parts)

    def excess(self, row: Sequence[float]) -> float:
        # Added one by one in ONE_SIDED order (not sum(), which compensates from Python
        # 3.12): the compiled checkpoint (native/) adds the same way, to the same double.
        limit, spread = self.limit, self.spread
        total = 0.0
        for i in ONE_SIDED:
            total += max(0.0, (row[i] - limit[i]) / spread[i])
        return total

    def score_one(self, row: Sequence[float]) -> float:
        return _raised(self._compiled.score(row), self.excess(row))

    def score_many(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """Scores with scikit-learn's own forest (training, and to check the walk)."""
        if self.forest is None:
            raise ModelError("score_many needs scikit-learn's forest: load(path, full=True)")
        if not len(rows):
            return []
        # score_samples is the negated anomaly score of the original paper, in (0, 1).
        forest = (-self.forest.score_samples(np.asarray(rows, dtype=float))).tolist()
        return [_raised(f, self.excess(r)) for f, r in zip(forest, rows, strict=True)]

    def explain(self, row: Sequence[float], top: int = 3) -> list[Contribution]:
        return contributions(row, FEATURES, self.center, self.spread, top)

    def save(self, path: str | Path) -> str:
        """Writes the model with skops; returns the file's SHA-256 (for the model card)."""
        import skops.io as sio

        if self.forest is None:
            raise ModelError("only a model trained or loaded with full=True can be saved")
        sio.dump(
            {
                "format": FORMAT,
                "features": list(FEATURES),
                "threshold": self.threshold,
                "center": self.center,
                "spread": self.spread,
                "limit": self.limit,
                "meta": self.meta,
                "forest": self.forest,
            },
            path,
        )
        return sha256(path)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fit(
    rows: Sequence[Sequence[float]],
    sessions: Sequence[int],
    *,
    seed: int = 0,
    target_fpr: float = 0.0005,
    trees: int = 200,
    samples: int = 1024,
    meta: dict[str, Any] | None = None,
) -> OfflineModel:
    """Fits a forest and picks the threshold from the training sessions themselves.

    The threshold is the ``1 - target_fpr`` quantile of each training session's
    highest step score: a session alerts when any step crosses it, so the rate
    that matters is per session, not per step.
    """
    if len(rows) < 256:
        raise ValueError(f"need at least 256 feature rows to train (got {len(rows)})")
    from sklearn.ensemble import IsolationForest

    x = np.asarray(rows, dtype=float)
    forest = IsolationForest(
        n_estimators=trees, max_samples=min(samples, len(rows)), random_state=seed
    )
    forest.fit(x)
    lo, mid, hi, top = np.quantile(x, [0.05, 0.5, 0.95, 1.0], axis=0)
    spread = np.maximum(hi - lo, 0.05)
    info = dict(meta or {})
    info.update(rows=len(rows), seed=seed, target_fpr=target_fpr, trees=trees)
    parts = ForestParts.of(forest)
    model = OfflineModel(parts, 0.5, mid.tolist(), spread.tolist(), top.tolist(), info)
    model.forest = forest
    scores = model.score_many(rows)
    best: dict[int, float] = {}
    for sid, sc in zip(sessions, scores, strict=True):
        if sc > best.get(sid, 0.0):
            best[sid] = sc
    threshold = float(np.quantile(np.fromiter(best.values(), dtype=float), 1.0 - target_fpr))
    model.threshold = round(threshold, 4)
    model.meta["sessions"] = len(best)
    return model


def load(path: str | Path, *, expect_sha256: str | None = None, full: bool = False) -> OfflineModel:
    """Loads a model file safely; raises :class:`ModelError` saying what is wrong.

    ``full`` also builds scikit-learn's forest (through skops), for ``score_many``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(f"cannot read model file {path}: {err.strerror}") from err
    if expect_sha256 is not None and hashlib.sha256(data).hexdigest() != expect_sha256.lower():
        raise ModelError(f"{path}: SHA-256 differs from the configured one (file changed?)")
    if not full:
        try:
            plain = read_plain(data)
        except _NotPlain:
            pass  # skops decides, and says why if it refuses
        else:
            return _model(path, plain, _plain_parts)
    return _model(path, _skops_loads(path, data), _sklearn_parts)


def _skops_loads(path: Path, data: bytes) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ModelError(f"{path} is not a skops model file ({err})") from err
    refused = sorted(set(untrusted) - set(TRUSTED))
    if refused:
        raise ModelError(f"{path} would build types it has no business with: {', '.join(refused)}")
    try:
        return sio.loads(data, trusted=list(untrusted))
    except Exception as err:  # skops raises many kinds on a damaged file
        raise ModelError(f"{path} cannot be loaded: {type(err).__name__}: {err}") from err


def _sklearn_parts(forest: Any) -> tuple[ForestParts, IsolationForest] | None:
    from sklearn.ensemble import IsolationForest

    if not isinstance(forest, IsolationForest) or not hasattr(forest, "estimators_"):
        return None
    return ForestParts.of(forest), forest


def _model(
    path: Path, obj: Any, parts_of: Callable[[Any], tuple[ForestParts, Any] | None]
) -> OfflineModel:
    """Checks a loaded file's contents (either reader) and builds the model."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ModelError(f"{path} is not a sessionwatch behaviour model ({FORMAT})")
    if obj.get("features") != list(FEATURES):
        raise ModelError(f"{path} was trained on other features: {obj.get('features')}")
    parts = parts_of(obj.get("forest"))
    threshold = obj.get("threshold")
    center, spread, limit = obj.get("center"), obj.get("spread"), obj.get("limit")
    if parts is None:
        raise ModelError(f"{path} holds no fitted IsolationForest")
    if not isinstance(threshold, float) or not 0.0 < threshold < 1.0:
        raise ModelError(f"{path} has no usable threshold: {threshold!r}")
    for name, values in (("center", center), ("spread", spread), ("limit", limit)):
        if not isinstance(values, list) or len(values) != len(FEATURES):
            raise ModelError(f"{path} has a malformed {name}")
    meta = obj.get("meta")
    assert isinstance(center, list) and isinstance(spread, list) and isinstance(limit, list)
    info = meta if isinstance(meta, dict) else {}
    try:
        return OfflineModel(parts[0], threshold, center, spread, limit, info, forest=parts[1])
    except ModelError as err:
        raise ModelError(f"{path}: {err}") from err


class _NotPlain(Exception):
    """The file holds something :func:`read_plain` does not read (skops will decide)."""


#: Types read_plain reads (a skops JsonNode is any JSON value, named builtins.str).
_PLAIN_TYPES: Final = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.str",
        "numpy.ndarray",
        "sklearn.ensemble._iforest.IsolationForest",
        "sklearn.tree._classes.ExtraTreeRegressor",
        "sklearn.tree._tree.Tree",
    }
)


def read_plain(data: bytes) -> Any:
    """A skops file as plain values: objects become dicts of their attributes plus
    ``"__type__"``; arrays are read with ``allow_pickle=False``. Builds nothing else;
    raises :class:`_NotPlain` for any other type or layout (protocol 2, skops 0.10+)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            schema = json.loads(zf.read("schema.json"))
            if schema.get("protocol") != 2:
                raise _NotPlain("skops protocol")
            return _plain(schema, zf)
    except _NotPlain:
        raise
    except Exception as err:  # damaged or unexpected: skops reads it and says what
        raise _NotPlain(type(err).__name__) from err


def _plain(state: dict[str, Any], zf: zipfile.ZipFile) -> Any:
    kind = f"{state['__module__']}.{state['__class__']}"
    if kind not in _PLAIN_TYPES:
        raise _NotPlain(kind)
    loader = state["__loader__"]
    if loader == "JsonNode":
        return json.loads(state["content"])
    if loader == "DictNode":
        keys = state["key_types"]["content"]
        if any(k["__loader__"] != "TypeNode" or k["__class__"] != "str" for k in keys):
            raise _NotPlain("dict keys")
        return {k: _plain(v, zf) for k, v in state["content"].items()}
    if loader in ("ListNode", "TupleNode"):
        items = [_plain(v, zf) for v in state["content"]]
        return items if loader == "ListNode" else tuple(items)
    if loader == "NdArrayNode" and state["type"] == "numpy":
        return _npy(zf.read(state["file"]))
    if loader in ("ObjectNode", "TreeNode"):
        attrs = _plain(state["content"], zf)
        if not isinstance(attrs, dict):
            raise _NotPlain("attributes")
        return {**attrs, "__type__": kind}
    raise _NotPlain(loader)


#: An .npy header as numpy writes it (format 1.0): element type, order, shape.
_NPY_HEADER: Final = re.compile(
    rb"\{'descr': (.+), 'fortran_order': (True|False), 'shape': \(([0-9, ]*)\), \} *\n"
)


def _npy(data: bytes) -> np.ndarray:
    """An .npy array, as ``np.load(allow_pickle=False)`` reads it, ~5x faster: a forest
    is ~1,000 small arrays, and numpy parses each header with ``ast.literal_eval``.
    Here only the element type is parsed that way, once per distinct one; any other
    header goes to numpy."""
    if data[:8] == b"\x93NUMPY\x01\x00":
        end = 10 + int.from_bytes(data[8:10], "little")
        m = _NPY_HEADER.fullmatch(data[10:end])
        if m is not None:
            dtype = _npy_dtype(m[1])
            shape = tuple(int(x) for x in m[3].split(b",") if x.strip())
            count = math.prod(shape)
            if not dtype.hasobject and len(data) - end == count * dtype.itemsize:
                flat = np.frombuffer(data, dtype, count, end)
                return flat.reshape(shape, order="F" if m[2] == b"True" else "C").copy()
    array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return array


@functools.lru_cache(maxsize=64)
def _npy_dtype(descr: bytes) -> np.dtype[Any]:
    return np.lib.format.descr_to_dtype(ast.literal_eval(descr.decode("latin-1")))


def _plain_parts(forest: Any) -> tuple[ForestParts, None] | None:
    """ForestParts from :func:`read_plain`'s dicts, checking shapes as it goes."""
    if not isinstance(forest, dict) or forest.get("__type__") != (
        "sklearn.ensemble._iforest.IsolationForest"
    ):
        return None
    try:
        estimators = forest["estimators_"]
        trees = []
        for est in estimators:
            tree = est["tree_"]
            nodes = tree["nodes"]
            if (
                est["__type__"] != "sklearn.tree._classes.ExtraTreeRegressor"
                or tree["__type__"] != "sklearn.tree._tree.Tree"
                or len(nodes) != tree["node_count"]
            ):
                return None
            trees.append(
                TreeArrays(
                    nodes["left_child"],
                    nodes["right_child"],
                    nodes["feature"],
                    nodes["threshold"],
                    int(tree["max_depth"]),
                )
            )
        parts = ForestParts(
            trees,
            [np.asarray(c) for c in forest["estimators_features_"]],
            list(forest["_decision_path_lengths"]),
            list(forest["_average_path_length_per_tree"]),
            int(forest["_max_samples"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    n = len(trees)
    if not n or not all(
        len(x) == n for x in (parts.columns, parts.path_lengths, parts.average_path_lengths)
    ):
        return None
    return parts, None
