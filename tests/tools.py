"""Outside tools the tests run for real (promtool, docker-compose) and metric parsing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "deploy" / "grafana"))
import make_dashboard as make_dashboard  # noqa: E402 - a script, not a package module

#: Grafana's range variables, given concrete values where PromQL must parse or run (5m
#: covers a whole end-to-end test run, so rates and quantiles have samples).
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "5m", "$__interval": "15s"}


def dashboard_queries() -> list[str]:
    """The dashboard's PromQL with Grafana's variables made concrete."""
    out = []
    for expr in make_dashboard.queries():
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        out.append(expr)
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (ours, Faust's, Prometheus' ``up``)."""
    return set(re.findall(r"\b(?:sessionwatch_|faust_)[a-z_]+\b|\bup\b", expr))


Sample = tuple[str, tuple[tuple[str, str], ...]]


def tool(name: str) -> str:
    """Path of a Debian-packaged tool; `make system-deps` installs the missing ones."""
    found = shutil.which(name)
    assert found, f"{name} not found: run `make system-deps` (installs Debian's package)"
    return found


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def samples(text: str) -> dict[Sample, float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(values: dict[Sample, float], name: str) -> float:
    return sum(v for (n, _), v in values.items() if n == name)


def own_families(text: str) -> str:
    """Only the sessionwatch_ families of an exposition (HELP, TYPE and samples)."""
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("sessionwatch_")
        or line.startswith("# HELP sessionwatch_")
        or line.startswith("# TYPE sessionwatch_")
    ]
    return "\n".join(lines) + "\n"


def containers(obj: object) -> Iterator[object]:
    """``obj`` and everything in it: the state's structs, dicts, tuples and lists (to
    ask the garbage collector which of them it tracks)."""
    yield obj
    if isinstance(obj, msgspec.Struct):
        for name in obj.__struct_fields__:
            yield from containers(getattr(obj, name))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from containers(value)
    elif isinstance(obj, tuple | list):
        for item in obj:
            yield from containers(item)
