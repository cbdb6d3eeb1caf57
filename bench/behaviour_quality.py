"""Trains the offline behaviour model and measures it on simulated weeks it never saw.

Reproduces ``models/behaviour.skops`` and the figures of ``models/README.md``:
training data is three simulated weeks (400 users each, no behavioural attacks),
evaluation three other weeks (200 users, five of each behavioural attack).
Usage::

    .venv/bin/python bench/behaviour_quality.py [--train-only] [--out models/behaviour.skops]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "detector.cli"]
TRAIN_SEEDS = (1, 2, 3)
EVAL_SEEDS = (101, 102, 103)
#: The simulator's policy, with the model under test.
CONFIG = """
[policy]
"glide.ui.session_timeout" = 30
"glide.ui.active.session.life_span" = 600
"glide.guest.session_timeout" = 15
"glide.guest.active.session.life_span" = 60
"glide.unauthorized.session_timeout" = 2
[detector]
allow_cidrs = ["100.100.0.0/16"]
max_concurrent_sessions = 3
[behaviour]
model = "offline"
path = "{model}"
"""


def run(*args: str) -> str:
    return subprocess.run([*CLI, *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "models" / "behaviour.skops"))
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--eval-only", action="store_true", help="measure the existing --out model")
    ap.add_argument("--target-fpr", default="0.0005")
    args = ap.parse_args()
    model = Path(args.out).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "policy.toml"
        config.write_text(CONFIG.format(model=model))
        if not args.eval_only:
            logs = []
            for seed in TRAIN_SEEDS:
                log = work / f"train-{seed}.jsonl"
                run(
                    "simulate",
                    "--users",
                    "400",
                    "--hours",
                    "168",
                    "--seed",
                    str(seed),
                    "-o",
                    str(log),
                )
                logs.append(str(log))
            subprocess.run(
                [*CLI, "train", *logs, "--config", str(config), "-o", str(model)], check=True
            )
        if args.train_only:
            return
        total = {"tp": 0, "fn": 0, "fp": 0, "benign": 0}
        for seed in EVAL_SEEDS:
            events, labels = work / f"eval-{seed}.jsonl", work / f"eval-{seed}.labels"
            run(
                "simulate",
                "--users",
                "200",
                "--hours",
                "168",
                "--seed",
                str(seed),
                "--behaviour-attacks",
                "5",
                "-o",
                str(events),
                "--labels-out",
                str(labels),
            )
            report = json.loads(
                run("evaluate", str(events), str(labels), "--config", str(config), "--json")
            )
            (m,) = report["models"]
            rules = [q for q in report["indicators"] if q["name"] != "behaviour_anomaly"]
            rule_fp = sum(q["fp"] for q in rules)
            rule_fn = sum(q["fn"] for q in rules)
            print(
                f"seed {seed}: ROC AUC {m['auc']:.4f}; threshold {m['threshold']}: recall "
                f"{m['recall']:.3f} ({m['tp']}/{m['tp'] + m['fn']}), false positives {m['fp']} "
                f"of {report['benign_sessions']} benign sessions ({100 * m['fpr']:.3f}%); "
                f"rules: {rule_fn} missed, {rule_fp} false positives; by attack: "
                + ", ".join(f"{k} {f}/{t}" for k, (f, t) in m["by_attack"].items())
            )
            total["tp"] += m["tp"]
            total["fn"] += m["fn"]
            total["fp"] += m["fp"]
            total["benign"] += report["benign_sessions"]
        recall = total["tp"] / (total["tp"] + total["fn"])
        print(
            f"all: recall {recall:.3f} ({total['tp']}/{total['tp'] + total['fn']}), false "
            f"positives {total['fp']} of {total['benign']} "
            f"({100 * total['fp'] / total['benign']:.3f}%)"
        )


if __name__ == "__main__":
    main()
