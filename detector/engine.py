"""The detection engine: events in, alerts out, state in a store. No I/O.

Replay and the streaming worker both drive this class, so they cannot disagree.
For each event the engine (1) opens or looks up the session and user state,
(2) runs the indicators that apply to the event type against the state as it
was before the event, (3) dedups (one alert per indicator and session, later
hits counted), and (4) applies the event's effect on the state. Expired state is
swept as event time advances, so memory stays bounded on endless streams and
replay gives the same answer however fast it runs.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import orjson

from detector.alerts import Alert, alert_id, rfc3339
from detector.anomaly.base import margin
from detector.anomaly.base import severity as behaviour_severity
from detector.anomaly.features import Baseline, observe, open_profile
from detector.anomaly.scoring import Scorer, build
from detector.events import KNOWN_FIELDS, Event
from detector.fingerprint import Fingerprinter
from detector.indicators import REGISTRY, Context, Indicator
from detector.indicators.weak_id import estimate_bits
from detector.netaddr import IpLadder
from detector.policy import CATALOGUE, Policy
from detector.state import SessionState, UserState
from detector.store import Census, MemoryStore, StateStore
from detector.useragent import same_browser

#: How often (event-time seconds) expired state is swept.
SWEEP_EVERY_S = 60.0

#: The checks of a plain login the compiled path decides (``Engine.login_shortcut``):
#: it checks the first three and hands the login back if one could fire; the others
#: cannot fire on an ID seen for the first time (its login address, browser and time
#: are the event's own) except fixation by a kept ID, which it also hands back.
LOGIN_CHECKS = frozenset(
    {
        "insecure_transport",
        "weak_session_id",
        "concurrent_sessions",
        "session_fixation",
        "ip_change",
        "user_agent_change",
        "idle_timeout_exceeded",
        "lifespan_exceeded",
    }
)
#: (minimum session-ID bits, (concurrency limit, idle timeout, life span, clock skew)).
LoginShortcut = tuple[float | None, tuple[int, float, float, float] | None]

#: The checks a transaction on a live, known, unlocated session of a never-locked,
#: never-deactivated user can trigger (the plan for that case); see Engine._routine.
ROUTINE_CHECKS = frozenset(
    {
        "ip_change",
        "user_agent_change",
        "idle_timeout_exceeded",
        "lifespan_exceeded",
        "insecure_transport",
    }
)
#: What the same transaction can also trigger when the user has a lock-out or
#: deactivation history (Engine._routine checks them too: _account_quiet).
ACCOUNT_CHECKS = frozenset({"locked_out_activity", "inactive_user_activity"})

_WEAK = tuple(i for i in REGISTRY if i.name == "weak_session_id")
_BEHAVIOUR = "behaviour_anomaly"


class _FromPolicy:
    """Default of ``Engine(behaviour=...)``: whatever the policy's [behaviour] says."""


FROM_POLICY = _FromPolicy()


class Engine:
    """Applies the indicator catalogue to a stream of validated events."""

    def __init__(
        self,
        policy: Policy,
        fingerprint: Fingerprinter,
        store: StateStore | None = None,
        *,
        sweep_every_s: float = SWEEP_EVERY_S,
        behaviour: Scorer | _FromPolicy | None = FROM_POLICY,
    ) -> None:
        self.policy = policy
        self.fingerprint = fingerprint
        self.store: StateStore = store or MemoryStore(self.session_expiry, self.user_expiry)
        self.ladder = IpLadder(policy.ip_prefix_v4, policy.ip_prefix_v6, policy.allow_cidrs)
        self._weak_enabled = policy.rule("weak_session_id").enabled
        self._concurrency_on = (
            bool(policy.max_concurrent_sessions) and policy.rule("concurrent_sessions").enabled
        )
        spans_on = bool(policy.life_span_s or policy.guest_life_span_s)
        enabled = [
            ind
            for ind in REGISTRY
            if policy.rule(ind.name).enabled
            and (ind.name != "concurrent_sessions" or self._concurrency_on)
            and (ind.name != "lifespan_exceeded" or spans_on)
        ]
        self._plan = _plan(enabled)
        # The routine-request shortcut only stands in for the checks it knows.
        routine_plan = self._plan[("transaction", False, False, False, False)]
        account_plan = self._plan[("transaction", False, True, False, False)]
        self.routine_shortcut = {i.name for i in routine_plan} <= ROUTINE_CHECKS and {
            i.name for i in account_plan
        } <= ROUTINE_CHECKS | ACCOUNT_CHECKS
        skew = policy.clock_skew_s
        self._idle_q = policy.idle_timeout_s + skew
        self._guest_idle_q = policy.guest_idle_timeout_s + skew
        self._span_q = policy.life_span_s + skew if policy.life_span_s else 0.0
        self._guest_span_q = policy.guest_life_span_s + skew if policy.guest_life_span_s else 0.0
        self._rules = {name: policy.rule(name) for name in (i.name for i in REGISTRY)}
        self._rules[_BEHAVIOUR] = policy.rule(_BEHAVIOUR)
        self.started_at: float | None = None
        self.watermark = -math.inf
        self._next_sweep = -math.inf
        self._sweep_every_s = sweep_every_s
        self.swept = 0
        if isinstance(behaviour, _FromPolicy):
            behaviour = build(policy.behaviour) if self._rules[_BEHAVIOUR].enabled else None
        self.behaviour: Scorer | None = behaviour

    @property
    def login_shortcut(self) -> LoginShortcut | None:
        """What a plain login (an ID seen for the first time, no account history, no
        location) is checked for, for the compiled replay path: the minimum session-ID
        bits (None: rule off) and the concurrency limit with the user timeouts it counts
        live sessions by (None: off). None when the plan holds an indicator outside
        :data:`LOGIN_CHECKS`; then every login is Python's. (With a behaviour model on,
        the compiled path also needs to score the login's first request itself.)"""
        plan = self._plan[("login", False, False, True, False)]
        if not {i.name for i in plan} <= LOGIN_CHECKS:
            return None
        p = self.policy
        return (
            float(p.min_session_id_bits) if self._weak_enabled else None,
            (p.max_concurrent_sessions, p.idle_timeout_s, p.life_span_s, p.clock_skew_s)
            if self._concurrency_on
            else None,
        )

    @property
    def routine_limits(self) -> tuple[float, float, float, float, float]:
        """The routine shortcut's idle and life-span limits (user, guest; 0 = no span),
        and the clock skew allowed after a lock-out or deactivation."""
        return (
            self._idle_q,
            self._guest_idle_q,
            self._span_q,
            self._guest_span_q,
            self.policy.clock_skew_s,
        )

    # -- expiry -----------------------------------------------------------------
    def session_expiry(self, s: SessionState) -> float:
        """When a session's state may be forgotten (event time)."""
        p = self.policy
        if s.ended is not None:
            return s.ended_at + p.state_retention_s
        if s.remember_me:
            return s.last + max(p.state_retention_s, p.remember_me_retention_s)
        idle = p.guest_idle_timeout_s if s.guest else p.idle_timeout_s
        return s.last + idle + p.state_retention_s

    def expiry_terms(self) -> tuple[float, float, float, float]:
        """:meth:`session_expiry` as four numbers (retention, a Remember-me session's keep,
        idle timeout, guest idle timeout), for the compiled path, which reckons it the
        same way (same sums, same order: the same floats)."""
        p = self.policy
        keep = max(p.state_retention_s, p.remember_me_retention_s)
        return (p.state_retention_s, keep, p.idle_timeout_s, p.guest_idle_timeout_s)

    def active_terms(self) -> tuple[float, float, float, float, float, float]:
        """:meth:`active_until` as six numbers (a Remember-me session's keep, the idle
        timeouts of users and guests, the clock skew, the life spans of users and guests),
        for the compiled census tally, which reckons it the same way."""
        p = self.policy
        keep = max(p.state_retention_s, p.remember_me_retention_s)
        return (
            keep,
            p.idle_timeout_s,
            p.guest_idle_timeout_s,
            p.clock_skew_s,
            p.life_span_s,
            p.guest_life_span_s,
        )

    def is_active(self, s: SessionState, now: float) -> bool:
        """Live as the platform would see it at ``now``: not ended, within its timeouts."""
        return now <= self.active_until(s)

    def active_until(self, s: SessionState) -> float:
        """The last event time at which ``s``, as it is, is live (-inf once ended).

        A Remember-me session stays live (its cookie logs the user back in) for the
        Remember-me retention; the life span applies to every session.
        """
        if s.ended is not None:
            return -math.inf
        p = self.policy
        if s.remember_me:
            idle = max(p.state_retention_s, p.remember_me_retention_s)
        else:
            idle = p.guest_idle_timeout_s if s.guest else p.idle_timeout_s
        until = s.last + idle + p.clock_skew_s
        span = p.guest_life_span_s if s.guest else p.life_span_s
        if span:
            until = min(until, s.start + span + p.clock_skew_s)
        return until

    def census(self) -> Census:
        """Live sessions at the current event time, and state sizes (for metrics)."""
        now = self.watermark
        return self.store.census(now, lambda s: self.is_active(s, now))

    def user_expiry(self, u: UserState) -> float:
        """Locked and deactivated users are remembered until unlocked or activated."""
        if u.locked or u.inactive:
            return math.inf
        p = self.policy
        return u.last + max(p.state_retention_s, p.remember_me_retention_s)

    # -- entry point ------------------------------------------------------------
    def process(self, ev: Event, raw: bytes | None = None) -> list[Alert]:
        """Applies one validated event; returns its alerts in catalogue order."""
        ts = ev.epoch
        if self.started_at is None:
            self.started_at = ts
        if ts > self.watermark:
            self.watermark = ts
            if ts >= self._next_sweep:
                self.sweep_to(ts)
        kind = ev.type
        if kind == "transaction" or kind == "login" or kind == "elevate":
            return self._activity(ev, raw)
        if kind == "logout" or kind == "terminate":
            self._end_session(ev)
        elif kind == "login_failed":
            pass  # never activity (SPEC.md §4); counted by the caller
        else:
            self._account(ev)
        return []

    def sweep_to(self, ts: float) -> None:
        """Forgets state expired by event time ``ts`` (the watermark, already moved)."""
        self.swept += self.store.sweep(ts)
        self._next_sweep = ts + self._sweep_every_s

    # -- activity ---------------------------------------------------------------
    def _activity(self, ev: Event, raw: bytes | None) -> list[Alert]:
        store = self.store
        ts = ev.epoch
        sid = ev.session_id
        assert sid is not None  # guaranteed by events.validate
        fp = self.fingerprint(sid)
        s = store.get_session(fp)
        if s is not None and ev.type == "transaction" and self.routine_shortcut:
            routine = self._routine(ev, ts, raw, fp, s)
            if routine is not None:
                return routine
        first_sight = s is None
        prior_guest = False
        if s is None:
            s = self._open(ev, ts)
        elif ev.type == "login" and s.ended is None and s.guest:
            prior_guest = True
            self._authenticate(s, ev, ts)
        user_name = s.user or ev.user
        u = store.get_user(user_name) if user_name is not None else None
        if ev.type == "login" and u is None and user_name is not None:
            u = UserState(last=ts)
        ctx = Context(ev, ts, s, u, self.policy, self.ladder, first_sight, prior_guest)
        ctx.started_at = self.started_at if self.started_at is not None else ts
        if first_sight and self._weak_enabled:
            ctx.id_bits = estimate_bits(sid)
        if ev.type == "login" and self._concurrency_on and u is not None:
            ctx.live_sessions = self._live_sessions(u, fp, ts) + 1

        account = u is not None and (u.locked_at is not None or u.deactivated_at is not None)
        located = ev.geo_lat is not None
        plan = self._plan[(ev.type, s.ended is not None, account, first_sight, located)]
        alerts = self._run(plan, ctx, fp, raw) if plan else []

        if self.behaviour is not None and user_name is not None and not s.guest and not s.ended:
            u = self._behave(ev, ts, raw, fp, s, u, user_name, alerts)
        # The event's effect on state, after the indicators saw the state before it.
        if ts > s.last:
            s.last = ts
        if ev.ip is not None:
            s.last_ip = ev.ip
        if ev.node is not None:
            s.node = ev.node
        if ev.type == "login":
            self._after_login(ev, ts, fp, s, u, user_name)
        elif ev.type == "elevate":
            alerts.extend(self._after_elevate(ev, ts, fp, s, raw))
        if ev.geo_lat is not None and ev.geo_lon is not None and user_name is not None:
            u = u or UserState(last=ts)
            if u.geo is None or ts >= u.geo[2]:
                u.geo = (ev.geo_lat, ev.geo_lon, ts)
                store.put_user(user_name, u)
        store.put_session(fp, s)
        return alerts

    def _routine(
        self, ev: Event, ts: float, raw: bytes | None, fp: str, s: SessionState
    ) -> list[Alert] | None:
        """The common case, a request on a live session from where and with what it
        logged in, within its timeouts, taken without building a context: None when any
        of :data:`ROUTINE_CHECKS` could fire (the full path decides).

        Each condition below is the negation of one check's trigger, so the result is
        the full path's by construction; the equivalence is also tested on simulated
        days with every indicator on.
        """
        if s.ended is not None or ev.geo_lat is not None:
            return None
        guest = s.guest
        if not guest and ev.scheme != "https":
            return None  # insecure_transport
        ua, login_ua = ev.user_agent, s.login_ua
        if ua and login_ua and ua != login_ua and not same_browser(login_ua, ua):
            return None  # user_agent_change
        if not s.remember_me and ts - s.last > (self._guest_idle_q if guest else self._idle_q):
            return None  # idle_timeout_exceeded
        span = self._guest_span_q if guest else self._span_q
        if span and ts - s.start > span:
            return None  # lifespan_exceeded
        ip, login_ip = ev.ip, s.login_ip
        moved = False  # ip_change fires, deduplicated: it only counts
        if ip is not None and login_ip is not None and not self.ladder.same_place(login_ip, ip):
            if "ip_change" not in s.raised:
                return None  # ip_change could alert
            asn = ev.asn
            moved = not (asn is not None and asn == s.login_asn and self.policy.trust_same_asn)
        user_name = s.user or ev.user
        u = self.store.get_user(user_name) if user_name is not None else None
        if u is not None and not _account_quiet(u, s.start, ts, self.policy.clock_skew_s):
            return None  # locked_out_activity, inactive_user_activity
        if moved:
            s.raised["ip_change"] += 1
        alerts: list[Alert] = []
        if self.behaviour is not None and user_name is not None and not guest:
            self._behave(ev, ts, raw, fp, s, u, user_name, alerts)
        if ts > s.last:
            s.last = ts
        if ip is not None:
            s.last_ip = ip
        if ev.node is not None:
            s.node = ev.node
        self.store.put_session(fp, s)
        return alerts

    def _behave(
        self,
        ev: Event,
        ts: float,
        raw: bytes | None,
        fp: str,
        s: SessionState,
        u: UserState | None,
        user_name: str,
        alerts: list[Alert],
    ) -> UserState:
        """Folds the request into the session's profile and the user's baseline, and
        scores the session at its checkpoints (appending to ``alerts``)."""
        beh = self.behaviour
        assert beh is not None
        if u is None:
            u = UserState(last=ts)
        base = u.baseline
        if base is None:
            base = u.baseline = Baseline()
        profile = s.profile
        gap: float | None = None
        if profile is None:  # the session's first authenticated request
            network = self.ladder.place_key(s.login_ip or ev.ip or "")
            profile = s.profile = open_profile(base, ev, ts, network, beh.min_user_sessions)
        else:
            gap = ts - s.last
        row = observe(base, profile, ev, ts, gap, ts - s.start)
        if row is not None and _BEHAVIOUR not in s.raised:
            alert = self._score(beh, ev, ts, raw, fp, user_name, row)
            if alert is not None:
                s.raised[_BEHAVIOUR] = 1
                alerts.append(alert)
        if ts > u.last:
            u.last = ts
        self.store.put_user(user_name, u)
        return u

    def _score(
        self,
        beh: Scorer,
        ev: Event,
        ts: float,
        raw: bytes | None,
        fp: str,
        user: str,
        row: list[float],
    ) -> Alert | None:
        results = beh.score(fp, row)
        hits = [(m, sc) for m, sc in results if sc >= m.threshold]
        if not hits:
            return None
        model, score = max(hits, key=lambda h: margin(h[1], h[0].threshold))
        evidence: dict[str, Any] = {
            "score": round(score, 4),
            "threshold": model.threshold,
            "model": model.name,
            "top_features": [c._asdict() for c in model.explain(row)],
        }
        if len(results) > 1:
            evidence["scores"] = {m.name: round(sc, 4) for m, sc in results}
        sev = self._rules[_BEHAVIOUR].severity or behaviour_severity(score, model.threshold)
        return self._alert(_BEHAVIOUR, sev, fp, ev, ts, user, evidence, raw)

    def _open(self, ev: Event, ts: float) -> SessionState:
        """State for an ID seen for the first time: a login, a guest, or an unknown session."""
        if ev.type == "login":
            return SessionState(
                start=ts,
                last=ts,
                user=ev.user,
                remember_me=ev.remember_me,
                login_ip=ev.ip,
                last_ip=ev.ip,
                login_ua=ev.user_agent,
                login_asn=ev.asn,
            )
        guest = ev.is_guest and ev.type == "transaction"
        return SessionState(
            start=ts,
            last=ts,
            user=None if guest else ev.user,
            guest=guest,
            known=False,
            login_ip=ev.ip,
            last_ip=ev.ip,
            login_ua=ev.user_agent,
            login_asn=ev.asn,
        )

    @staticmethod
    def _authenticate(s: SessionState, ev: Event, ts: float) -> None:
        """A login on a live guest ID: the authenticated session starts here."""
        s.guest = False
        s.known = True
        s.user = ev.user
        s.start = s.last = ts
        s.remember_me = ev.remember_me
        s.login_ip = s.last_ip = ev.ip
        s.login_ua = ev.user_agent
        s.login_asn = ev.asn

    def _run(
        self, indicators: tuple[Indicator, ...], ctx: Context, fp: str, raw: bytes | None
    ) -> list[Alert]:
        alerts: list[Alert] = []
        raised = ctx.session.raised
        for ind in indicators:
            evidence = ind.check(ctx)
            if evidence is None:
                continue
            count = raised.get(ind.name, 0)
            raised[ind.name] = count + 1
            if count:
                continue  # deduplicated: counted in the session's alert state
            rule = self._rules[ind.name]
            severity = rule.severity or (
                ind.severity(ctx) if ind.severity else self._default_severity(ind.name)
            )
            user = ctx.session.user or ctx.event.user
            alerts.append(
                self._alert(ind.name, severity, fp, ctx.event, ctx.ts, user, evidence, raw)
            )
        return alerts

    @staticmethod
    def _default_severity(name: str) -> str:
        return CATALOGUE[name].severity

    def _alert(
        self,
        kind: str,
        severity: str,
        fp: str,
        ev: Event,
        ts: float,
        user: str | None,
        evidence: dict[str, Any],
        raw: bytes | None,
    ) -> Alert:
        rule = self._rules[kind]
        details = dict(evidence)
        if ev.url is not None:
            details.setdefault("url", ev.url)
        if ev.node is not None:
            details.setdefault("node", ev.node)
        extra = _extra_fields(raw, self.fingerprint) if raw is not None else None
        if extra:
            details["extra"] = extra
        return Alert(
            alert_id=alert_id(kind, fp, ev.event_id),
            kind=kind,
            severity=severity,
            ts=rfc3339(ts),
            event_id=ev.event_id,
            session=fp,
            user=user,
            ip=ev.ip,
            details=details,
            action=rule.action,
            mode=rule.mode,
        )

    def _live_sessions(self, u: UserState, exclude: str, ts: float) -> int:
        """Counts the user's other live sessions, forgetting dead ones as it goes."""
        p = self.policy
        live: list[str] = []
        for other in u.sessions:
            if other == exclude:
                continue
            st = self.store.get_session(other)
            if st is None or st.ended is not None:
                continue
            if u.locked_at is not None and st.start <= u.locked_at:
                continue
            if u.deactivated_at is not None and st.start <= u.deactivated_at:
                continue
            if not st.remember_me and ts - st.last > p.idle_timeout_s + p.clock_skew_s:
                continue
            if p.life_span_s and ts - st.start > p.life_span_s + p.clock_skew_s:
                continue
            live.append(other)
        u.sessions = tuple(live)
        return len(live)

    def _after_login(
        self,
        ev: Event,
        ts: float,
        fp: str,
        s: SessionState,
        u: UserState | None,
        user_name: str | None,
    ) -> None:
        prev = ev.previous_session_id
        if prev is not None and prev != ev.session_id:
            self._rotate_away(self.fingerprint(prev), ts, guest=True)
        if u is not None and user_name is not None:
            # The list is the concurrency rule's alone (each login there drops the dead
            # ones): with the rule off nothing would ever shorten it, one entry per login.
            if not self._concurrency_on:
                u.sessions = ()
            elif fp not in u.sessions and s.ended is None:
                u.sessions = (*u.sessions, fp)
            u.last = max(u.last, ts)
            self.store.put_user(user_name, u)

    def _after_elevate(
        self, ev: Event, ts: float, fp: str, s: SessionState, raw: bytes | None
    ) -> list[Alert]:
        new_id = ev.new_session_id
        if new_id is None or new_id == ev.session_id:
            return []
        new_fp = self.fingerprint(new_id)
        if self.store.get_session(new_fp) is not None:
            # Already rotated: this elevation is being delivered again (at-least-once
            # streaming after a crash). Applying it twice must change nothing.
            return []
        # The rotated ID continues the same logical session: same start, same
        # baseline, same dedup memory, same fate if the old one was already dead.
        carried = SessionState(
            start=s.start,
            last=s.last,
            user=s.user,
            guest=s.guest,
            remember_me=s.remember_me,
            known=True,
            login_ip=s.login_ip,
            last_ip=s.last_ip,
            login_ua=s.login_ua,
            node=s.node,
            ended=s.ended,
            ended_at=s.ended_at,
            raised=dict(s.raised),
            profile=s.profile,  # moved, not copied: the old ID's session is over
        )
        s.profile = None
        alerts: list[Alert] = []
        if self._weak_enabled and "weak_session_id" not in carried.raised:
            bits = estimate_bits(new_id)
            if bits < self.policy.min_session_id_bits:
                ctx = Context(ev, ts, carried, None, self.policy, self.ladder, True)
                ctx.id_bits = bits
                alerts = self._run(_WEAK, ctx, new_fp, raw)
        self.store.put_session(new_fp, carried)
        if s.ended is None:
            s.ended, s.ended_at = "rotation", ts
        if s.user is not None:
            u = self.store.get_user(s.user)
            if u is not None:
                u.sessions = tuple(new_fp if x == fp else x for x in u.sessions)
                self.store.put_user(s.user, u)
        return alerts

    def _rotate_away(self, fp: str, ts: float, *, guest: bool) -> None:
        old = self.store.get_session(fp)
        if old is None:
            old = SessionState(start=ts, last=ts, guest=guest, known=False)
        if old.ended is None:
            old.ended, old.ended_at = "rotation", ts
        self.store.put_session(fp, old)

    # -- session end and account events ------------------------------------------
    def _end_session(self, ev: Event) -> None:
        assert ev.session_id is not None
        ts = ev.epoch
        fp = self.fingerprint(ev.session_id)
        s = self.store.get_session(fp)
        if s is None:
            # Remember the ID as dead even if its start was never seen.
            s = SessionState(start=ts, last=ts, user=ev.user, known=False)
        if s.ended is None:
            s.ended = "logout" if ev.type == "logout" else "terminate"
            s.ended_at = ts
        self.store.put_session(fp, s)
        name = s.user or ev.user
        if name is not None:
            u = self.store.get_user(name)
            if u is not None and fp in u.sessions:
                u.sessions = tuple(x for x in u.sessions if x != fp)
                self.store.put_user(name, u)

    def _account(self, ev: Event) -> None:
        assert ev.user is not None
        ts = ev.epoch
        u = self.store.get_user(ev.user) or UserState(last=ts)
        u.last = max(u.last, ts)
        kind = ev.type
        if kind == "lockout":
            u.locked, u.locked_at = True, ts
            u.sessions = ()
        elif kind == "unlock":
            u.locked = False
        elif kind == "deactivate":
            u.inactive, u.deactivated_at = True, ts
            u.sessions = ()
        elif kind == "activate":
            u.inactive = False
        self.store.put_user(ev.user, u)


def _account_quiet(u: UserState, start: float, ts: float, skew: float) -> bool:
    """Neither account indicator fires for a request at ``ts`` on a session started at
    ``start`` (seen before): each condition negates one branch of their trigger."""
    for blocked, since in ((u.locked, u.locked_at), (u.inactive, u.deactivated_at)):
        if since is not None and ts > since + skew and (blocked or start <= since):
            return False
    return True


def _plan(
    enabled: list[Indicator],
) -> dict[tuple[str, bool, bool, bool, bool], tuple[Indicator, ...]]:
    """Indicators to run per (event type, ended, account history, first sight, located),
    in catalogue order."""
    plan = {}
    for kind in ("login", "transaction", "elevate"):
        for ended, account, first, located in itertools.product((False, True), repeat=4):
            open_gates = {
                "always": True,
                "ended": ended,
                "live": not ended,
                "account": account,
                "first_sight": first,
                "located": located,
            }
            plan[(kind, ended, account, first, located)] = tuple(
                ind for ind in enabled if kind in ind.events and open_gates[ind.gate]
            )
    return plan


def _extra_fields(raw: bytes, fingerprint: Fingerprinter) -> dict[str, Any] | None:
    """Fields outside SPEC.md §2, kept as evidence; anything session-like is fingerprinted."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    for key, value in extra.items():
        if "session" in key.lower() and isinstance(value, str):
            extra[key] = fingerprint(value)
    return extra or None
