"""Replay throughput against an orjson parse-only loop, and peak RSS with 100k open sessions.

Both sides run as fresh processes over the same file, alternating, best of
``--rounds``; the machine is shared and noisy, so only the ratio measured in one
run means anything. Usage::

    .venv/bin/python bench/replay_throughput.py [--events 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench"
CLI = [sys.executable, "-m", "detector.cli"]
POLICY = ROOT / "examples" / "policy.toml"

PARSE_ONLY = """
import sys, orjson
n = 0
with open(sys.argv[1], "rb") as fh:
    for line in fh:
        orjson.loads(line)
        n += 1
print(n)
"""


def simulated_file(events: int, days: int = 1) -> Path:
    """A simulated log of about ``events`` events (cached: generation is slower than replay).

    Several days give users the history the behaviour model needs to score them.
    """
    from detector.simulate import Simulation

    path = CACHE / (f"sim-{events}.jsonl" if days == 1 else f"sim-{events}-{days}d.jsonl")
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    users = max(10, events // (50 * days))  # over 50 events per user-day: cut to size below
    buf = io.BytesIO()
    attacks = 5 if days >= 4 else 0
    Simulation(users=users, hours=24 * days, seed=42, behaviour_attacks=attacks).write(buf)
    lines = buf.getvalue().splitlines(keepends=True)[:events]
    path.write_bytes(b"".join(lines))
    return path


def open_sessions_file(sessions: int) -> Path:
    """``sessions`` logins within 20 minutes, then 3 transactions each: all live at the end."""
    path = CACHE / f"open-{sessions}.jsonl"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    t0 = 1_795_334_400.0
    out = bytearray()
    n = 0
    for rnd in range(4):
        for i in range(sessions):
            ts = t0 + rnd * 1200 + i * 1200 / sessions
            n += 1
            ev = {
                "event_id": f"o{n}",
                "ts": ts,
                "type": "login" if rnd == 0 else "transaction",
                "session_id": f"{i:08X}{(i * 2654435761) % 2**96:024X}",
                "user": f"user{i % (sessions // 2)}",
                "ip": f"10.{i % 250}.{(i // 250) % 250}.{1 + i % 200}",
                "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0",
                "url": "/incident.do",
            }
            out += orjson.dumps(ev) + b"\n"
    path.write_bytes(out)
    return path


# The child's own peak (VmHWM): rusage's ru_maxrss would also count the moments before
# exec, when the forked child still shared this (large) benchmark process's memory.
PEAK_RSS = """
import sys
from detector.cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    print(next(x for x in fh if x.startswith("VmHWM")).split()[1], file=sys.stderr)
sys.exit(rc)
"""


def run(cmd: list[str], native: bool = True) -> float:
    """Wall seconds of one child process (``native=False``: the Python path alone)."""
    env = {**os.environ, "SESSIONWATCH_NATIVE": "1" if native else "0"}
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, cwd=ROOT, check=True, env=env)
    return time.perf_counter() - start


def peak_rss_kib(args: list[str]) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        check=True,
        text=True,
    )
    return int(proc.stderr.strip().splitlines()[-1])


def rules_only_policy() -> Path:
    """examples/policy.toml without its [behaviour] table: every rule, no model."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / "policy-rules-only.toml"
    path.write_text(POLICY.read_text().split("[behaviour]")[0])
    return path


def replay_args(path: Path, policy: Path = POLICY) -> list[str]:
    return [
        "replay",
        "-q",
        "--config",
        str(policy),
        "--alerts-out",
        "/dev/null",
        "--dead-letter-out",
        "/dev/null",
        str(path),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--days", type=int, default=7, help="length of the behaviour run's log")
    args = ap.parse_args()
    os.environ.setdefault("SESSIONWATCH_KEY", "benchmark-key")

    path = simulated_file(args.events)
    with open(path, "rb") as fh:
        count = sum(1 for _ in fh)
    rules = rules_only_policy()
    best = dict.fromkeys(("parse", "rules", "python", "example"), float("inf"))
    for _ in range(args.rounds):
        best["parse"] = min(best["parse"], run([sys.executable, "-c", PARSE_ONLY, str(path)]))
        best["rules"] = min(best["rules"], run([*CLI, *replay_args(path, rules)]))
        best["python"] = min(best["python"], run([*CLI, *replay_args(path, rules)], False))
        best["example"] = min(best["example"], run([*CLI, *replay_args(path)]))
    rate = {k: count / t for k, t in best.items()}
    print(f"events                      {count:>12,}")
    print(f"orjson parse-only           {rate['parse']:>12,.0f} events/s")
    print(f"replay, every rule          {rate['rules']:>12,.0f} events/s")
    print(f"  the same, Python path only{rate['python']:>12,.0f} events/s")
    print(f"replay, examples/policy.toml{rate['example']:>12,.0f} events/s   (rules + model)")
    print(
        f"ratio every rule / parse-only {rate['rules'] / rate['parse']:>10.2f}   (target >= 0.33)"
    )
    print(f"ratio compiled / Python path  {rate['rules'] / rate['python']:>10.2f}")
    print(
        f"ratio example / parse-only    {rate['example'] / rate['parse']:>10.2f}   (target >= 0.25)"
    )

    # The behaviour model only scores users with history: a simulated week of about the
    # same size, with every rule on, then with the model on too.
    week = simulated_file(args.events, args.days)
    with open(week, "rb") as fh:
        count = sum(1 for _ in fh)
    parse_best = rules_best = model_best = float("inf")
    for _ in range(args.rounds):
        parse_best = min(parse_best, run([sys.executable, "-c", PARSE_ONLY, str(week)]))
        rules_best = min(rules_best, run([*CLI, *replay_args(week, rules)]))
        model_best = min(model_best, run([*CLI, *replay_args(week)]))
    parse_rate, rules_rate, model_rate = (count / t for t in (parse_best, rules_best, model_best))
    print(f"{args.days}-day log                   {count:>12,} events")
    print(f"orjson parse-only           {parse_rate:>12,.0f} events/s")
    print(f"replay, rules only          {rules_rate:>12,.0f} events/s")
    print(f"replay, rules + model       {model_rate:>12,.0f} events/s")
    print(f"ratio rules only / parse-only {rules_rate / parse_rate:>10.2f}   (target >= 0.33)")
    print(f"ratio model on / parse-only {model_rate / parse_rate:>12.2f}   (target >= 0.25)")
    print(f"ratio model on / rules only {model_rate / rules_rate:>12.2f}")

    open_path = open_sessions_file(args.sessions)
    rss_kib = peak_rss_kib(replay_args(open_path))
    print(
        f"peak RSS, {args.sessions:,} open sessions {rss_kib / 1024:>8,.0f} MiB   (target < 1536)"
    )


if __name__ == "__main__":
    main()
