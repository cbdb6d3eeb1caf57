"""The offline model's file safety and exact scoring; the online model's determinism."""

from __future__ import annotations

import io
import json
import math
import pickle
import random
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression

from detector.anomaly.base import ModelError
from detector.anomaly.features import FEATURES
from detector.anomaly.offline import (
    CompiledForest,
    OfflineModel,
    TreeArrays,
    _check_tree,
    _npy,
    fit,
    load,
    sha256,
)
from detector.anomaly.online import OnlineModel
from detector.anomaly.scoring import build
from detector.native import native_module
from detector.policy import Policy, PolicyError

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "models" / "behaviour.skops"


def rows(n: int, seed: int = 0) -> list[list[float]]:
    r = random.Random(seed)
    return [[abs(r.gauss(0, 0.3)) for _ in FEATURES] for _ in range(n)]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[OfflineModel, Path]:
    data = rows(600)
    model = fit(data, [i // 3 for i in range(600)], seed=1, trees=20, samples=256)
    path = tmp_path_factory.mktemp("model") / "small.skops"
    model.save(path)
    return model, path


def test_the_level_walk_scores_exactly_like_scikit_learn(small: tuple[OfflineModel, Path]) -> None:
    model, _ = small
    probe = [
        *rows(300, seed=5),
        [5.0] * len(FEATURES),
        [0.0] * len(FEATURES),
        [1e-7] * len(FEATURES),
    ]
    assert [model.score_one(r) for r in probe] == pytest.approx(model.score_many(probe), abs=1e-12)


def test_the_committed_model_walk_matches_scikit_learn() -> None:
    model = load(COMMITTED, full=True)
    probe = rows(200, seed=9)
    assert [model.score_one(r) for r in probe] == pytest.approx(model.score_many(probe), abs=1e-12)


def test_the_plain_reader_gives_the_forest_skops_builds(small: tuple[OfflineModel, Path]) -> None:
    """load() reads the arrays without scikit-learn; they must be exactly skops' ones."""
    for path in (small[1], COMMITTED):
        plain, full = load(path), load(path, full=True)
        assert plain.forest is None and full.forest is not None
        for name in ("_feature", "_threshold", "_left", "_right", "_value", "_roots"):
            a, b = getattr(plain._compiled, name), getattr(full._compiled, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert plain._compiled._depth == full._compiled._depth
        assert plain._compiled._denominator == full._compiled._denominator
        assert (plain.threshold, plain.center, plain.spread, plain.limit, plain.meta) == (
            full.threshold,
            full.center,
            full.spread,
            full.limit,
            full.meta,
        )
        probe = rows(100, seed=4)
        assert [plain.score_one(r) for r in probe] == [full.score_one(r) for r in probe]
    with pytest.raises(ModelError, match="full=True"):
        load(COMMITTED).score_many(rows(2))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(7, dtype="<i8"),
        np.linspace(-1, 1, 12).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.zeros((0,), dtype=np.uint8),
        np.array(3.5),
        np.array([True, False]),
        np.array([(1, 2.5), (-1, np.nan)], dtype=[("left_child", "<i8"), ("threshold", "<f8")]),
        np.arange(5, dtype=">i4"),
    ],
)
def test_the_quick_npy_reader_reads_what_numpy_reads(array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    data = buf.getvalue()
    got, want = _npy(data), np.load(io.BytesIO(data), allow_pickle=False)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes() or np.array_equal(got, want, equal_nan=True)


def test_the_quick_npy_reader_refuses_objects_and_damage() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        _npy(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.arange(10))
    with pytest.raises(ValueError):
        _npy(buf.getvalue()[:-8])  # one element short: numpy's reader says so


def test_loading_for_scoring_does_not_import_scikit_learn() -> None:
    # Importing scikit-learn and skops costs ~3 s at every start of replay or a worker.
    code = (
        "import sys; from detector.anomaly.offline import load; "
        f"load({str(COMMITTED)!r}); print('sklearn' in sys.modules, 'skops' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_forest_pointing_outside_its_trees_is_refused(
    small: tuple[OfflineModel, Path], tmp_path: Path
) -> None:
    """A crafted file with a split on feature 99 must not reach the walk."""
    _, path = small
    bad = tmp_path / "crafted.skops"
    schema = json.loads(zipfile.ZipFile(path).read("schema.json"))
    first = schema["content"]["forest"]["content"]["content"]["estimators_features_"]

    def split_on_99(data: bytes) -> bytes:
        cols = np.load(io.BytesIO(data))
        cols[0] = 99
        buf = io.BytesIO()
        np.save(buf, cols)
        return buf.getvalue()

    rewrite(path, bad, first["content"][0]["file"], split_on_99)
    for full in (False, True):
        with pytest.raises(ModelError, match="malformed"):
            load(bad, full=full)


def test_the_compiled_walk_is_the_numpy_walk_bit_for_bit(small: tuple[OfflineModel, Path]) -> None:
    """native/ walks the same flat arrays and adds in the same order: the same double."""
    for model in (small[0], load(COMMITTED)):
        forest = model._compiled
        if forest._native_sum is None:
            pytest.skip("sessionwatch_native is not built here")
        probe = [*rows(300, seed=11), *boundary_rows(forest)]
        compiled = [forest.path_sum(r) for r in probe]
        forest._native_sum, native = None, forest._native_sum
        try:
            assert [forest.path_sum(r) for r in probe] == compiled
        finally:
            forest._native_sum = native


def test_scores_beyond_the_training_range_rise_towards_one(
    small: tuple[OfflineModel, Path],
) -> None:
    model, _ = small
    ordinary = [0.1] * len(FEATURES)
    pace = FEATURES.index("pace")
    faster = [list(ordinary) for _ in range(3)]
    for row, value in zip(
        faster, (model.limit[pace], model.limit[pace] + 1, model.limit[pace] + 5), strict=True
    ):
        row[pace] = value
    scores = [model.score_one(r) for r in faster]
    assert scores[0] < scores[1] < scores[2] < 1.0
    assert scores[2] > 0.95


def test_a_saved_model_loads_back_the_same(small: tuple[OfflineModel, Path]) -> None:
    model, path = small
    again = load(path, expect_sha256=sha256(path))
    assert again.threshold == model.threshold
    assert again.limit == model.limit
    probe = rows(50, seed=2)
    assert [again.score_one(r) for r in probe] == [model.score_one(r) for r in probe]


def test_a_pinned_hash_refuses_a_changed_file(small: tuple[OfflineModel, Path]) -> None:
    _, path = small
    with pytest.raises(ModelError, match="SHA-256 differs"):
        load(path, expect_sha256="0" * 64)


def boundary_rows(forest: CompiledForest) -> list[list[float]]:
    """Rows on and beside the forest's split thresholds (the compiled walk compares
    float32 features with float32 thresholds rounded down: equal only if exact), and
    NaN and infinities (NaN goes right, as in numpy and scikit-learn)."""
    inner = forest._left != np.arange(len(forest._left))
    splits = list(zip(forest._feature[inner], forest._threshold[inner], strict=True))
    out = [[5.0] * len(FEATURES), [0.0] * len(FEATURES)]
    for special in (math.nan, math.inf, -math.inf):
        out.append([special] * len(FEATURES))
    for k, (feature, t) in enumerate(splits[:: max(1, len(splits) // 400)]):
        t32 = float(np.float32(t))
        for v in (
            t,
            t32,
            float(np.nextafter(np.float32(t32), np.float32(-np.inf))),
            float(np.nextafter(np.float32(t32), np.float32(np.inf))),
            math.nextafter(t, math.inf),
            math.nextafter(t, -math.inf),
        ):
            row = rows(1, seed=k)[0]
            row[int(feature)] = v
            out.append(row)
    return out


def tree(left: list[int], right: list[int], max_depth: int) -> TreeArrays:
    return TreeArrays(
        left=np.array(left),
        right=np.array(right),
        feature=np.array([0 if x != -1 else -2 for x in left]),
        threshold=np.array([0.5 if x != -1 else -2.0 for x in left]),
        max_depth=max_depth,
    )


@pytest.mark.parametrize(
    ("left", "right", "max_depth", "why"),
    [
        ([1, 2, -1, -1, -1], [4, 3, -1, -1, -1], 2, ""),  # a proper tree
        ([1, 2, -1, -1, -1], [4, 3, -1, -1, -1], 1, "deeper"),  # max_depth understated
        ([1, 2, -1, -1, -1], [4, 2, -1, -1, -1], 2, "twice"),  # a node with two parents
        ([1, 2, 1, -1, -1], [4, 3, 4, -1, -1], 9, "twice"),  # a node pointing back up
        ([1, -1, -1, -1, -1], [4, -1, -1, -1, -1], 1, "not at all"),  # unreachable nodes
    ],
)
def test_trees_that_are_not_trees_are_refused(
    left: list[int], right: list[int], max_depth: int, why: str
) -> None:
    """Crafted children (a cycle, a shared node, a depth lie) would make the walks stop
    short of a leaf; both readers check them before anything walks the forest."""
    t = tree(left, right, max_depth)
    columns = np.array([0])
    if not why:
        _check_tree(t, columns, len(left))
        return
    with pytest.raises(ModelError, match="reached twice or not at all, or deeper"):
        _check_tree(t, columns, len(left))
    native = native_module()
    if native is not None and why != "not at all":
        # The compiled walk refuses what could stop a walk short on its own (it only
        # lays out the nodes it reaches, so unreachable ones do not matter to it).
        here = np.arange(len(left))
        leaf = t.left == -1
        with pytest.raises(ValueError, match="forest"):
            native.Forest(
                [0] * len(left),
                [0.5] * len(left),
                np.where(leaf, here, t.left).tolist(),
                np.where(leaf, here, t.right).tolist(),
                [1.0] * len(left),
                [0],
                max_depth,
            )


def rewrite(path: Path, out: Path, member: str, change: Callable[[bytes], bytes]) -> None:
    """Copies a skops file changing one member, as an attacker with write access would."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, change(data) if item.filename == member else data)


def tamper(path: Path, out: Path, change: str, to: str) -> None:
    """Rewrites the skops schema."""

    def edit(data: bytes) -> bytes:
        text = data.decode()
        assert change in text
        return text.replace(change, to, 1).encode()

    rewrite(path, out, "schema.json", edit)


def test_a_tampered_file_naming_foreign_code_is_refused(
    small: tuple[OfflineModel, Path], tmp_path: Path
) -> None:
    _, path = small
    bad = tmp_path / "tampered.skops"
    schema = json.loads(zipfile.ZipFile(path).read("schema.json"))
    assert schema  # a skops file: a JSON schema of the objects to build
    tamper(path, bad, '"sklearn.ensemble._iforest"', '"os"')
    with pytest.raises(ModelError, match="no business with"):
        load(bad)


def test_a_foreign_model_is_refused(tmp_path: Path) -> None:
    other = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    path = tmp_path / "foreign.skops"
    sio.dump(other, path)
    with pytest.raises(ModelError, match="not a sessionwatch behaviour model"):
        load(path)
    forest = IsolationForest(n_estimators=5, random_state=0).fit([[0.0, 1.0]] * 10)
    wrong = tmp_path / "other-features.skops"
    sio.dump(
        {"format": "sessionwatch-behaviour/2", "features": ["a", "b"], "forest": forest}, wrong
    )
    with pytest.raises(ModelError, match="other features"):
        load(wrong)


def test_a_pickle_or_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"format": "sessionwatch-behaviour/2"}))
    with pytest.raises(ModelError, match="not a skops model file"):
        load(path)
    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(COMMITTED.read_bytes()[:5000])
    with pytest.raises(ModelError):
        load(truncated)
    with pytest.raises(ModelError, match="cannot read"):
        load(tmp_path / "absent.skops")


def test_the_online_model_is_deterministic_under_a_seed() -> None:
    data = rows(400, seed=3)

    def scores(seed: int) -> list[float]:
        m = OnlineModel(threshold=0.9, warmup=100, seed=seed)
        return [m.score_one(r) for r in data]

    first = scores(7)
    assert first == scores(7)
    assert first[:100] == [0.0] * 100  # warm-up: learning only
    assert any(s > 0 for s in first[100:])


def test_behaviour_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_mapping(
            {"behaviour": {"model": "magic", "threshold": 1.5, "sha256": "xyz", "color": 1}}
        )
    text = str(err.value)
    for needle in (
        "model must be one of",
        "threshold must be below 1",
        "sha256 must be",
        "unknown key 'color'",
    ):
        assert needle in text
    cfg = tmp_path / "policy.toml"
    cfg.write_text('[behaviour]\nmodel = "offline"\npath = "models/x.skops"\n')
    assert Policy.load(cfg).behaviour.path == tmp_path / "models" / "x.skops"


def test_a_missing_model_is_refused_at_start_up(tmp_path: Path) -> None:
    policy = Policy.from_mapping({"behaviour": {"model": "offline", "path": str(tmp_path / "x")}})
    with pytest.raises(ModelError, match="cannot read model file"):
        build(policy.behaviour)


def test_cli_refuses_a_bad_model_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from detector.cli import main

    cfg = tmp_path / "policy.toml"
    (tmp_path / "m.skops").write_bytes(b"not a model")
    cfg.write_text('[behaviour]\nmodel = "offline"\npath = "m.skops"\n')
    events = tmp_path / "e.jsonl"
    events.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a"), str(events)])
    assert exit_.value.code == 2
    assert "[behaviour] model refused" in capsys.readouterr().err


def test_skops_schema_is_what_tamper_rewrites() -> None:
    # Guards the tamper helper: the schema names the forest's module.
    assert b"sklearn.ensemble._iforest" in zipfile.ZipFile(io.BytesIO(COMMITTED.read_bytes())).read(
        "schema.json"
    )
