"""Outside tools the tests run for real (promtool, docker-compose) and metric parsing."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]

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
