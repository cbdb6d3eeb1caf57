"""Policy and detector settings (SPEC.md §3), loaded from TOML and validated.

The ``[policy]`` table uses ServiceNow's own property names and units (minutes)
so an administrator can copy values from ``sys_properties`` unchanged. A bad
config is refused as a whole, with every problem listed, before any event is read.

>>> p = Policy.from_mapping({"policy": {"glide.ui.session_timeout": 60}})
>>> p.idle_timeout_s, p.rule("ip_change").mode
(3600.0, 'monitor')
>>> Policy.from_mapping({"policy": {"glide.ui.session_timeout": -1}})
Traceback (most recent call last):
...
detector.policy.PolicyError: invalid configuration:
  - [policy] "glide.ui.session_timeout" must not be negative (got -1)
"""

from __future__ import annotations

import ipaddress
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

SEVERITIES: Final = ("low", "medium", "high", "critical")
MODES: Final = ("monitor", "enforce")
ACTIONS: Final = ("none", "terminate_session", "lock_out_user")


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """An indicator's contract from SPEC.md §4: default severity and recommended action."""

    severity: str
    action: str


#: SPEC.md §4, in the order alerts for one event are emitted.
CATALOGUE: Final[dict[str, CatalogueEntry]] = {
    "reuse_after_logout": CatalogueEntry("critical", "terminate_session"),
    "reuse_after_termination": CatalogueEntry("critical", "terminate_session"),
    "reuse_after_rotation": CatalogueEntry("critical", "terminate_session"),
    "locked_out_activity": CatalogueEntry("critical", "lock_out_user"),
    "inactive_user_activity": CatalogueEntry("critical", "lock_out_user"),
    "session_fixation": CatalogueEntry("high", "terminate_session"),
    "ip_change": CatalogueEntry("high", "terminate_session"),
    "user_agent_change": CatalogueEntry("medium", "terminate_session"),
    "impossible_travel": CatalogueEntry("high", "terminate_session"),
    "idle_timeout_exceeded": CatalogueEntry("medium", "terminate_session"),
    "lifespan_exceeded": CatalogueEntry("medium", "terminate_session"),
    "insecure_transport": CatalogueEntry("medium", "none"),
    "weak_session_id": CatalogueEntry("medium", "none"),
    "unknown_session": CatalogueEntry("low", "none"),
    "concurrent_sessions": CatalogueEntry("low", "none"),
    "behaviour_anomaly": CatalogueEntry("low", "none"),
}

# ServiceNow property -> (Policy attribute in seconds, ServiceNow default in minutes)
_POLICY_KEYS: Final = {
    "glide.ui.session_timeout": ("idle_timeout_s", 30),
    "glide.ui.active.session.life_span": ("life_span_s", 0),
    "glide.guest.session_timeout": ("guest_idle_timeout_s", 30),
    "glide.guest.active.session.life_span": ("guest_life_span_s", 0),
    "glide.unauthorized.session_timeout": ("logout_grace_s", 0),
}

#: The ServiceNow properties the ``[policy]`` section takes.
POLICY_PROPERTIES: Final = tuple(_POLICY_KEYS)

_DETECTOR_DEFAULTS: Final[dict[str, Any]] = {
    "clock_skew_seconds": 5,
    "ip_prefix_v4": 24,
    "ip_prefix_v6": 64,
    "allow_cidrs": [],
    "min_session_id_bits": 64,
    "max_concurrent_sessions": 0,
    "unknown_session_grace_minutes": 0,
    "fingerprint_key_env": "SESSIONWATCH_KEY",
    # Extensions to SPEC.md §3 (documented in README): how long state outlives activity.
    "state_retention_hours": 24,
    "remember_me_retention_days": 30,
    # Extension: an IP change within the login's autonomous system (when events carry
    # `asn`, e.g. from Okta) is the same provider's network, not a move.
    "trust_same_asn": True,
}

_RULE_KEYS: Final = frozenset({"enabled", "mode", "severity"})

#: ServiceNow's own advice: "Do not set this value to more than one day."
_WARN_ABOVE_MINUTES: Final = 24 * 60


class PolicyError(ValueError):
    """The configuration cannot be used; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class Rule:
    """Per-indicator switches from ``[rules.<name>]``."""

    name: str
    enabled: bool = True
    mode: str = "monitor"
    severity: str | None = None  # None: the catalogue's (or the indicator's own) severity
    action: str = "none"


#: ``[behaviour]`` (an extension, README): which anomaly model(s) score behaviour.
BEHAVIOUR_MODELS: Final = ("none", "offline", "online", "both")
_BEHAVIOUR_DEFAULTS: Final[dict[str, Any]] = {
    "model": "none",
    "path": "models/behaviour.skops",
    "sha256": "",
    "threshold": 0.0,  # 0: the offline model's own threshold
    "online_threshold": 0.9,
    "warmup_steps": 1000,
    "min_user_sessions": 3,
    "seed": 0,
}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Settings of the ``behaviour_anomaly`` indicator; ``path`` is resolved already."""

    model: str = "none"
    path: Path = Path("models/behaviour.skops")
    sha256: str | None = None
    threshold: float | None = None
    online_threshold: float = 0.9
    warmup_steps: int = 1000
    min_user_sessions: int = 3
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    """Validated settings, times converted to seconds."""

    idle_timeout_s: float = 30 * 60.0
    life_span_s: float = 0.0
    guest_idle_timeout_s: float = 30 * 60.0
    guest_life_span_s: float = 0.0
    logout_grace_s: float = 0.0
    clock_skew_s: float = 5.0
    ip_prefix_v4: int = 24
    ip_prefix_v6: int = 64
    allow_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    min_session_id_bits: float = 64.0
    max_concurrent_sessions: int = 0
    unknown_session_grace_s: float = 0.0
    fingerprint_key_env: str = "SESSIONWATCH_KEY"
    state_retention_s: float = 24 * 3600.0
    remember_me_retention_s: float = 30 * 86400.0
    trust_same_asn: bool = True
    behaviour: Behaviour = Behaviour()
    rules: Mapping[str, Rule] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def rule(self, name: str) -> Rule:
        found = self.rules.get(name)
        if found is not None:
            return found
        entry = CATALOGUE[name]
        return Rule(name, action=entry.action)

    @classmethod
    def load(cls, path: str | Path | None) -> Policy:
        """Reads a TOML file (or the defaults when ``path`` is None)."""
        if path is None:
            return cls.from_mapping({})
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as err:
            raise PolicyError([f"cannot read config file {path}: {err.strerror}"]) from err
        except tomllib.TOMLDecodeError as err:
            raise PolicyError([f"{path} is not valid TOML: {err}"]) from err
        return cls.from_mapping(data, base_dir=Path(path).parent)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> Policy:
        """Validates a parsed config; raises :class:`PolicyError` listing every problem."""
        problems: list[str] = []
        warnings: list[str] = []
        for section in data:
            if section not in ("policy", "detector", "rules", "behaviour"):
                problems.append(
                    f"unknown section [{section}] (expected [policy], [detector], "
                    "[behaviour], [rules.<name>])"
                )
        values: dict[str, Any] = {}

        policy_tbl = _table(data, "policy", problems)
        minutes: dict[str, float] = {}
        for key, raw in policy_tbl.items():
            if key not in _POLICY_KEYS:
                problems.append(
                    f'[policy] unknown key "{key}" (known: {", ".join(sorted(_POLICY_KEYS))})'
                )
                continue
            number = _number(f'[policy] "{key}"', raw, problems)
            if number is not None:
                minutes[key] = number
        for key, (attr, default) in _POLICY_KEYS.items():
            value = minutes.get(key, default)
            minutes[key] = value
            values[attr] = value * 60.0
            if value > _WARN_ABOVE_MINUTES:
                warnings.append(
                    f'[policy] "{key}" = {value:g} minutes is above 24 h; ServiceNow advises '
                    "no more than a day"
                )
        _check_life_span(
            minutes, "glide.ui.active.session.life_span", "glide.ui.session_timeout", problems
        )
        _check_life_span(
            minutes,
            "glide.guest.active.session.life_span",
            "glide.guest.session_timeout",
            problems,
        )
        guest_idle, user_idle = (
            minutes["glide.guest.session_timeout"],
            minutes["glide.ui.session_timeout"],
        )
        if guest_idle > user_idle:
            problems.append(
                f'[policy] "glide.guest.session_timeout" ({guest_idle:g}) must not be above '
                f'"glide.ui.session_timeout" ({user_idle:g}): guest sessions get the shorter limit'
            )
        for key in ("glide.ui.session_timeout", "glide.guest.session_timeout"):
            if minutes[key] == 0:
                problems.append(f'[policy] "{key}" must be above 0 minutes')
        grace = minutes["glide.unauthorized.session_timeout"]
        if grace and grace >= minutes["glide.ui.session_timeout"]:
            warnings.append(
                '[policy] "glide.unauthorized.session_timeout" should be less than '
                '"glide.ui.session_timeout" (ServiceNow\'s guidance)'
            )

        det = dict(_DETECTOR_DEFAULTS)
        for key, raw in _table(data, "detector", problems).items():
            if key not in _DETECTOR_DEFAULTS:
                known = ", ".join(sorted(_DETECTOR_DEFAULTS))
                problems.append(f"[detector] unknown key {key!r} (known: {known})")
            else:
                det[key] = raw
        values.update(_detector_values(det, problems))

        rules: dict[str, Rule] = {}
        for name, raw in _table(data, "rules", problems).items():
            rule = _rule(name, raw, problems)
            if rule is not None:
                rules[name] = rule
        values["rules"] = rules
        values["behaviour"] = _behaviour(_table(data, "behaviour", problems), base_dir, problems)

        if problems:
            raise PolicyError(problems)
        for w in warnings:
            log.warning("%s", w)
        return cls(warnings=tuple(warnings), **values)


def _table(data: Mapping[str, Any], name: str, problems: list[str]) -> Mapping[str, Any]:
    tbl = data.get(name, {})
    if not isinstance(tbl, Mapping):
        problems.append(f"[{name}] must be a table")
        return {}
    return tbl


def _number(where: str, raw: Any, problems: list[str], *, integer: bool = False) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        problems.append(f"{where} must be a number (got {raw!r})")
        return None
    if integer and not isinstance(raw, int):
        problems.append(f"{where} must be a whole number (got {raw!r})")
        return None
    if raw < 0:
        problems.append(f"{where} must not be negative (got {raw!r})")
        return None
    if raw != raw or raw == float("inf"):
        problems.append(f"{where} must be finite (got {raw!r})")
        return None
    return float(raw)


def _check_life_span(
    minutes: Mapping[str, float], span_key: str, idle_key: str, problems: list[str]
) -> None:
    span, idle = minutes[span_key], minutes[idle_key]
    if span and span <= idle:
        problems.append(
            f'[policy] "{span_key}" ({span:g}) must be above "{idle_key}" ({idle:g}) '
            "when it is on, or 0 to turn it off"
        )


def _detector_values(det: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def num(key: str, *, integer: bool = False, upper: float | None = None) -> float:
        value = _number(f"[detector] {key}", det[key], problems, integer=integer)
        if value is None:
            return float(_DETECTOR_DEFAULTS[key])
        if upper is not None and value > upper:
            problems.append(f"[detector] {key} must be at most {upper:g} (got {value:g})")
        return value

    out["clock_skew_s"] = num("clock_skew_seconds")
    out["ip_prefix_v4"] = int(num("ip_prefix_v4", integer=True, upper=32))
    out["ip_prefix_v6"] = int(num("ip_prefix_v6", integer=True, upper=128))
    out["min_session_id_bits"] = num("min_session_id_bits")
    out["max_concurrent_sessions"] = int(num("max_concurrent_sessions", integer=True))
    out["unknown_session_grace_s"] = num("unknown_session_grace_minutes") * 60.0
    out["state_retention_s"] = num("state_retention_hours") * 3600.0
    out["remember_me_retention_s"] = num("remember_me_retention_days") * 86400.0
    if out["state_retention_s"] <= 0:
        problems.append("[detector] state_retention_hours must be above 0")

    trust = det["trust_same_asn"]
    if not isinstance(trust, bool):
        problems.append(f"[detector] trust_same_asn must be true or false (got {trust!r})")
    else:
        out["trust_same_asn"] = trust

    key_env = det["fingerprint_key_env"]
    if not isinstance(key_env, str) or not key_env:
        problems.append(f"[detector] fingerprint_key_env must be a variable name (got {key_env!r})")
    else:
        out["fingerprint_key_env"] = key_env

    cidrs = det["allow_cidrs"]
    nets = []
    if not isinstance(cidrs, list):
        problems.append(f"[detector] allow_cidrs must be a list of CIDR strings (got {cidrs!r})")
    else:
        for item in cidrs:
            try:
                nets.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError:
                problems.append(f"[detector] allow_cidrs entry {item!r} is not a CIDR range")
    out["allow_cidrs"] = tuple(nets)
    return out


def _behaviour(tbl: Mapping[str, Any], base_dir: Path | None, problems: list[str]) -> Behaviour:
    raw = dict(_BEHAVIOUR_DEFAULTS)
    for key, value in tbl.items():
        if key not in raw:
            known = ", ".join(sorted(_BEHAVIOUR_DEFAULTS))
            problems.append(f"[behaviour] unknown key {key!r} (known: {known})")
        else:
            raw[key] = value
    model = raw["model"]
    if model not in BEHAVIOUR_MODELS:
        problems.append(
            f"[behaviour] model must be one of {', '.join(BEHAVIOUR_MODELS)} (got {model!r})"
        )
        model = "none"
    path, digest = raw["path"], raw["sha256"]
    if not isinstance(path, str) or not path:
        problems.append(f"[behaviour] path must be a file name (got {path!r})")
        path = _BEHAVIOUR_DEFAULTS["path"]
    if not isinstance(digest, str) or (
        digest and (len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest))
    ):
        problems.append(f"[behaviour] sha256 must be 64 hex digits or empty (got {digest!r})")
        digest = ""
    resolved = Path(path)
    if not resolved.is_absolute() and base_dir is not None:
        resolved = base_dir / resolved
    values: dict[str, float] = {}
    for key in ("threshold", "online_threshold"):
        number = _number(f"[behaviour] {key}", raw[key], problems)
        if number is not None and number >= 1.0:
            problems.append(f"[behaviour] {key} must be below 1 (scores are in [0, 1])")
        values[key] = number if number is not None else float(_BEHAVIOUR_DEFAULTS[key])
    counts: dict[str, int] = {}
    for key in ("warmup_steps", "min_user_sessions", "seed"):
        number = _number(f"[behaviour] {key}", raw[key], problems, integer=True)
        counts[key] = int(number) if number is not None else int(_BEHAVIOUR_DEFAULTS[key])
    return Behaviour(
        model=model,
        path=resolved,
        sha256=digest or None,
        threshold=values["threshold"] or None,
        online_threshold=values["online_threshold"],
        warmup_steps=counts["warmup_steps"],
        min_user_sessions=counts["min_user_sessions"],
        seed=counts["seed"],
    )


def _rule(name: str, raw: Any, problems: list[str]) -> Rule | None:
    if name not in CATALOGUE:
        problems.append(
            f"[rules.{name}] is not an indicator (known: {', '.join(sorted(CATALOGUE))})"
        )
        return None
    if not isinstance(raw, Mapping):
        problems.append(f"[rules.{name}] must be a table")
        return None
    bad = False
    for key in raw:
        if key not in _RULE_KEYS:
            problems.append(f"[rules.{name}] unknown key {key!r} (known: enabled, mode, severity)")
            bad = True
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"[rules.{name}] enabled must be true or false (got {enabled!r})")
        bad = True
    mode = raw.get("mode", "monitor")
    if mode not in MODES:
        problems.append(f"[rules.{name}] mode must be one of {', '.join(MODES)} (got {mode!r})")
        bad = True
    severity = raw.get("severity")
    if severity is not None and severity not in SEVERITIES:
        problems.append(
            f"[rules.{name}] severity must be one of {', '.join(SEVERITIES)} (got {severity!r})"
        )
        bad = True
    if bad:
        return None
    return Rule(name, enabled=enabled, mode=mode, severity=severity, action=CATALOGUE[name].action)
