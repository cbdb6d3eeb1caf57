"""Realistic session traffic with labelled attacks, for tests, demos and benchmarks.

Benign traffic is built from the look-alikes that make session-hijack detection
hard: office and home networks whose hosts churn inside a /24, VPN egress that
is allow-listed, browsers that upgrade mid-session, Remember-me sessions with a
long lunch break, guest sessions that rotate at login, elevations that rotate,
a phone beside the desktop, admin terminations of abandoned sessions, lock-outs
that are lifted before the user comes back, failed logins.

Attacks are injected on dedicated victim accounts so that every one of them has
an exact, known set of expected alerts (the labels): the simulated day is a
test oracle, recall 1.0 and zero false positives is the bar.

Every benign user also has habits: a few pages they use, their own pace, their
usual response sizes, their working hours. Behavioural attacks
(``behaviour_attacks``) break those habits and nothing else, on a real user's
own session or network and browser, so no rule can see them: a scripted bulk
export, a night-time login, an enumeration of admin pages. They need days of
history before them (their victims have at least three earlier sessions) and
are labelled ``behaviour_anomaly`` on their first event. The timing of
benign and malicious traffic comes from the policy (timeouts, life spans,
grace), so the oracle stays right when the policy changes.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Final

import orjson

from detector.alerts import rfc3339
from detector.policy import Policy

#: 2026-11-02T00:00:00Z, a Monday: simulations start at a fixed, known time.
EPOCH0: Final = 1_793_577_600.0

#: The policy simulated days are built against (README: examples/policy.toml).
SIM_CONFIG: Final[dict[str, Any]] = {
    "policy": {
        "glide.ui.session_timeout": 30,
        "glide.ui.active.session.life_span": 600,
        "glide.guest.session_timeout": 15,
        "glide.guest.active.session.life_span": 60,
        "glide.unauthorized.session_timeout": 2,
    },
    "detector": {
        "clock_skew_seconds": 5,
        "ip_prefix_v4": 24,
        "ip_prefix_v6": 64,
        "allow_cidrs": ["100.100.0.0/16"],
        "min_session_id_bits": 64,
        "max_concurrent_sessions": 3,
        "unknown_session_grace_minutes": 0,
    },
}

_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36"
)
_EDGE = _CHROME + " Edg/{v}.0.0.0"
_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
_SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{v} Safari/605.1.15"
)
_SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.{v} Mobile/15E148 Safari/604.1"
)
_DESKTOPS: Final = (_CHROME, _EDGE, _FIREFOX, _SAFARI_MAC)
_URLS: Final = (
    "/incident.do",
    "/incident_list.do",
    "/sc_req_item.do",
    "/change_request.do",
    "/kb_view.do",
    "/navpage.do",
    "/api/now/table/incident",
    "/sys_user.do",
    "/home.do",
    "/$pa_dashboard.do",
    "/task_list.do",
    "/sp",
)
_GUEST_URLS: Final = ("/sp", "/kb_view.do", "/login.do", "/csm")
#: Tables an intruder enumerates; no benign user's habits include them.
_ADMIN_TABLES: Final = (
    "sys_user",
    "sys_user_group",
    "sys_user_role",
    "sys_properties",
    "sys_script",
    "sys_script_include",
    "sys_ui_script",
    "sys_security_acl",
    "sys_db_object",
    "sys_dictionary",
    "cmdb_ci",
    "cmdb_ci_server",
    "cmdb_ci_database",
    "cmn_location",
    "core_company",
    "ecc_queue",
    "sys_audit",
    "syslog",
    "sys_email",
    "sys_attachment",
    "oauth_entity",
    "sys_certificate",
    "discovery_credentials",
    "sys_auth_profile",
    "ldap_server_config",
    "sys_rest_message",
    "sys_soap_message",
    "sys_data_source",
    "sys_import_set",
    "sys_scheduled_job",
    "sys_update_set",
    "sys_plugins",
    "sys_app",
    "sys_store_app",
    "sn_si_incident",
    "sys_hub_flow",
    "sys_ws_definition",
    "sys_user_preference",
    "sys_log_transaction",
    "sys_cluster_state",
)
_NODES: Final = ("node-a", "node-b", "node-c", "node-d")


@dataclass
class Stats:
    events: int = 0
    attacks: int = 0
    labels: int = 0


@dataclass
class _Profile:
    name: str
    office: str  # "10.x.y" prefix of a /24
    home: str  # "172.16-31.x.y" prefix of a /24
    desktop_ua: str
    ua_version: int
    vpn: bool
    #: Habits: the pages this user works on, mean think time, usual response size.
    urls: tuple[str, ...] = _URLS
    pace_s: float = 240.0
    size: float = 30_000.0
    phone: bool = False
    carriers: tuple[str, ...] = ()


@dataclass
class _Stretch:
    """A stretch of a benign work session on one ID: where an intruder can blend in."""

    sid: str
    start: float
    last: float
    login_ip: str
    ua: Callable[[float], str]


@dataclass
class _Label:
    event: dict[str, Any]
    indicator: str
    severity: str
    attack: str


@dataclass
class _Timeline:
    """Events being built; sorted and numbered only when written."""

    rng: random.Random
    end: float
    events: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    labels: list[_Label] = field(default_factory=list)

    def add(self, ts: float, kind: str, **fields: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {"event_id": "", "ts": round(ts, 3), "type": kind}
        ev.update({k: v for k, v in fields.items() if v is not None})
        self.events.append((ev["ts"], len(self.events), ev))
        return ev

    def label(self, ev: dict[str, Any], indicator: str, severity: str, attack: str) -> None:
        self.labels.append(_Label(ev, indicator, severity, attack))


class Simulation:
    """A reproducible simulated deployment: ``users`` benign users over ``hours``."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        users: int = 50,
        hours: float = 24.0,
        seed: int = 1,
        behaviour_attacks: int = 0,
    ) -> None:
        if users < 1 or hours <= 0:
            raise ValueError("need at least one user and a positive duration")
        if behaviour_attacks and hours < BEHAVIOUR_MIN_HOURS:
            raise ValueError(
                f"behavioural attacks need at least {BEHAVIOUR_MIN_HOURS} hours: "
                "their victims must have a history to break"
            )
        self.behaviour_attacks = behaviour_attacks
        self.policy = policy or Policy.from_mapping(SIM_CONFIG)
        self.users = users
        self.hours = hours
        self.seed = seed
        self.rng = random.Random(seed)
        self.tl = _Timeline(self.rng, EPOCH0 + hours * 3600)
        self._victims = 0
        #: Benign users' habits, logins and work-session stretches (behavioural victims).
        self._people: list[_Profile] = []
        self._logins: dict[str, list[float]] = {}
        self._stretches: dict[str, list[_Stretch]] = {}

    # -- identifiers -------------------------------------------------------------
    def sid(self) -> str:
        return f"{self.rng.getrandbits(128):032X}"

    def _office_ip(self, prefix: str) -> str:
        return f"{prefix}.{self.rng.randint(2, 254)}"

    def _foreign_ip(self) -> str:
        r = self.rng
        first = r.choice((45, 91, 103, 141, 185, 193, 203))
        return f"{first}.{r.randint(1, 254)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _profile(self, name: str) -> _Profile:
        r = self.rng
        return _Profile(
            name=name,
            office=f"10.{r.randint(0, 255)}.{r.randint(0, 255)}",
            home=f"172.{r.randint(16, 31)}.{r.randint(0, 255)}",
            desktop_ua=r.choice(_DESKTOPS),
            ua_version=r.randint(118, 124),
            vpn=r.random() < 0.25,
            urls=tuple(r.sample(_URLS, r.randint(4, 7))),
            pace_s=r.uniform(90, 400),
            size=r.uniform(10_000, 80_000),
            phone=r.random() < 0.4,
            carriers=tuple(f"100.{r.randint(64, 99)}.{r.randint(0, 255)}" for _ in range(2)),
        )

    def _ua(self, p: _Profile, bump: int = 0) -> str:
        return p.desktop_ua.format(v=p.ua_version + bump)

    # -- building blocks ------------------------------------------------------------
    def _gap(self, pace_s: float = 240.0) -> float:
        """A benign think time, always safely inside the idle timeout."""
        cap = self.policy.idle_timeout_s - 180
        return min(max(5.0, self.rng.expovariate(1 / pace_s)), cap)

    def _url(self, p: _Profile | None) -> str:
        # Mostly the user's own pages; now and then any page (habits are not walls).
        if p is None:
            return self.rng.choice(_GUEST_URLS)
        return self.rng.choice(p.urls if self.rng.random() < 0.97 else _URLS)

    def _size(self, p: _Profile | None) -> int | None:
        return None if p is None else int(self.rng.lognormvariate(math.log(p.size), 0.6))

    def _transactions(
        self,
        t: float,
        until: float,
        sid: str,
        user: str | None,
        ips: Callable[[], str],
        ua: Callable[[float], str],
        *,
        remember_me: bool = False,
        guest: bool = False,
        habits: _Profile | None = None,
    ) -> float:
        """Emits activity from ``t`` while before ``until``; returns the last activity time."""
        last = t
        lunch_done = not remember_me
        pace = habits.pace_s if habits is not None else 240.0
        while True:
            gap = self._gap(pace)
            if not lunch_done and last > t and self.rng.random() < 0.05:
                # Remember-me users may leave for longer than the idle timeout.
                gap = self.policy.idle_timeout_s + self.rng.uniform(600, 3600)
                lunch_done = True
            nt = last + gap
            if nt >= until or nt >= self.tl.end:
                return last
            last = nt
            self.tl.add(
                nt,
                "transaction",
                session_id=sid,
                user=user,
                ip=ips(),
                user_agent=ua(nt),
                scheme="https",
                url=self._url(habits) if not guest else self.rng.choice(_GUEST_URLS),
                node=self.rng.choice(_NODES),
                guest=True if guest else None,
                response_bytes=self._size(habits),
            )

    # -- benign -------------------------------------------------------------------
    def _benign_user(self, p: _Profile) -> None:
        r = self.rng
        days = math.ceil(self.hours / 24)
        for day in range(days):
            base = EPOCH0 + day * 86400
            # A phone is a habit: used from the first day by those who have one.
            mobile = p.phone and (day == 0 or r.random() < 0.5)
            if r.random() < 0.9:
                # No benign lock-out on a day the phone comes out: it could fall in the lock.
                self._work_session(p, base + r.uniform(7 * 3600, 10 * 3600), allow_lock=not mobile)
            if mobile:
                self._mobile_session(p, base + r.uniform(19 * 3600, 21 * 3600))
            if r.random() < 0.1:
                self._guest_browsing(base + r.uniform(0, 86400))

    def _work_session(self, p: _Profile, start: float, *, allow_lock: bool) -> None:
        r = self.rng
        pol = self.policy
        tl = self.tl
        prefix = p.office
        login_ip = (
            f"100.100.{r.randint(0, 255)}.{r.randint(2, 254)}" if p.vpn else self._office_ip(prefix)
        )
        remember_me = r.random() < 0.15
        span = pol.life_span_s or 12 * 3600
        length = r.uniform(1800, min(8 * 3600, span - 1800))
        end = start + length
        upgrade_at = start + r.uniform(0, length) if r.random() < 0.1 else math.inf

        def ua(ts: float) -> str:
            return self._ua(p, 1 if ts >= upgrade_at else 0)

        def ips() -> str:
            # Hosts churn inside the office /24; VPN users sometimes drop the VPN.
            return self._office_ip(prefix) if r.random() < 0.3 or not p.vpn else login_ip

        t = start
        if r.random() < 0.05:
            tl.add(t - 20, "login_failed", user=p.name, ip=login_ip, user_agent=ua(t))
        previous = None
        if r.random() < 0.3:
            previous = self.sid()
            g = t - r.uniform(30, 240)
            tl.add(
                g,
                "transaction",
                session_id=previous,
                ip=login_ip,
                user_agent=ua(g),
                url="/login.do",
                guest=True,
            )
        sid = self.sid()
        tl.add(
            t,
            "login",
            session_id=sid,
            user=p.name,
            ip=login_ip,
            user_agent=ua(t),
            remember_me=remember_me or None,
            previous_session_id=previous,
            node=r.choice(_NODES),
        )
        self._logins.setdefault(p.name, []).append(t)
        if r.random() < 0.2:
            mid = t + r.uniform(60, length / 2)
            last = self._transactions(
                t, mid, sid, p.name, ips, ua, remember_me=remember_me, habits=p
            )
            new = self.sid()
            t = last + r.uniform(5, 60)
            if t >= tl.end:
                return
            tl.add(
                t,
                "elevate",
                session_id=sid,
                new_session_id=new,
                user=p.name,
                ip=ips(),
                user_agent=ua(t),
            )
            sid = new
        last = self._transactions(t, end, sid, p.name, ips, ua, remember_me=remember_me, habits=p)
        self._stretches.setdefault(p.name, []).append(_Stretch(sid, t, last, login_ip, ua))
        finish = r.random()
        if finish < 0.7:
            out = last + r.uniform(5, 120)
            tl.add(out, "logout", session_id=sid, user=p.name)
            if allow_lock and r.random() < 0.05:
                # Locked for an hour after leaving (a password reset, an audit).
                lock = out + r.uniform(600, 1800)
                tl.add(lock, "lockout", user=p.name, actor="admin")
                tl.add(lock + 3600, "unlock", user=p.name, actor="admin")
        elif finish < 0.8:
            # An admin clears an abandoned session.
            tl.add(
                last + r.uniform(300, 1200), "terminate", session_id=sid, user=p.name, actor="admin"
            )

    def _mobile_session(self, p: _Profile, start: float) -> None:
        r = self.rng
        carrier = r.choice(p.carriers)
        sid = self.sid()
        ua_text = _SAFARI_IOS.format(v=r.randint(0, 5))
        self.tl.add(
            start,
            "login",
            session_id=sid,
            user=p.name,
            ip=self._office_ip(carrier),
            user_agent=ua_text,
        )
        self._logins.setdefault(p.name, []).append(start)
        last = self._transactions(
            start,
            start + r.uniform(300, 1800),
            sid,
            p.name,
            lambda: self._office_ip(carrier),
            lambda _t: ua_text,
            habits=p,
        )
        if r.random() < 0.5:
            self.tl.add(last + 30, "logout", session_id=sid, user=p.name)

    def _guest_browsing(self, start: float) -> None:
        r = self.rng
        sid = self.sid()
        ip = self._office_ip(f"172.{r.randint(16, 31)}.{r.randint(0, 255)}")
        ua_text = r.choice(_DESKTOPS).format(v=120)
        self.tl.add(
            start, "transaction", session_id=sid, ip=ip, user_agent=ua_text, url="/sp", guest=True
        )
        limit = min(self.policy.guest_life_span_s or 3600, 1800) - 60
        t = start
        for _ in range(r.randint(1, 5)):
            t += r.uniform(20, min(240, self.policy.guest_idle_timeout_s - 60))
            if t - start > limit:
                break
            self.tl.add(
                t,
                "transaction",
                session_id=sid,
                ip=ip,
                user_agent=ua_text,
                url=r.choice(_GUEST_URLS),
                guest=True,
            )

    # -- attacks ------------------------------------------------------------------
    def _victim(self) -> tuple[_Profile, str, float, str, str]:
        """A fresh victim with a live session: profile, session ID, login time, IP, UA."""
        self._victims += 1
        p = self._profile(f"victim{self._victims:04d}")
        p.vpn = False
        r = self.rng
        latest = max(self.tl.end - 13 * 3600, EPOCH0 + 600)
        t = r.uniform(EPOCH0 + 300, latest)
        ip = self._office_ip(p.office)
        ua_text = self._ua(p)
        sid = self.sid()
        self.tl.add(
            t, "login", session_id=sid, user=p.name, ip=ip, user_agent=ua_text, node="node-a"
        )
        return p, sid, t, ip, ua_text

    def _act(
        self, t: float, sid: str, user: str | None, ip: str, ua_text: str, **kw: Any
    ) -> dict[str, Any]:
        return self.tl.add(
            t,
            "transaction",
            session_id=sid,
            user=user,
            ip=ip,
            user_agent=ua_text,
            url=kw.pop("url", "/incident.do"),
            node="node-b",
            **kw,
        )

    def _busy(self, t: float, sid: str, user: str, ip: str, ua_text: str, n: int) -> float:
        for _ in range(n):
            t += self.rng.uniform(30, 300)
            self._act(t, sid, user, ip, ua_text)
        return t

    def _other_browser(self, ua_text: str) -> str:
        return _FIREFOX.format(v=121) if "Firefox" not in ua_text else _CHROME.format(v=121)

    def attack(self, kind: str, n: int) -> None:
        tl, r, pol = self.tl, self.rng, self.policy
        p, sid, login_t, ip, ua_text = self._victim()
        user = p.name
        tag = f"{kind}#{n}"
        t = self._busy(login_t, sid, user, ip, ua_text, 3)
        skew = pol.clock_skew_s
        if kind == "ip_change":
            ev = self._act(t + 60, sid, user, self._foreign_ip(), ua_text)
            tl.label(ev, "ip_change", "high", tag)
            self._busy(t + 60, sid, user, ip, ua_text, 2)
        elif kind == "user_agent_change":
            ev = self._act(
                t + 60, sid, user, self._office_ip(p.office), self._other_browser(ua_text)
            )
            tl.label(ev, "user_agent_change", "medium", tag)
        elif kind == "reuse_after_logout":
            tl.add(t + 30, "logout", session_id=sid, user=user)
            ev = self._act(
                t + 30 + pol.logout_grace_s + skew + r.uniform(60, 1200), sid, user, ip, ua_text
            )
            tl.label(ev, "reuse_after_logout", "critical", tag)
        elif kind == "hijack_after_logout":
            # SPEC.md §4's example: every indicator that applies is raised.
            tl.add(t + 30, "logout", session_id=sid, user=user)
            ev = self._act(
                t + 30 + pol.logout_grace_s + skew + r.uniform(60, 600),
                sid,
                user,
                self._foreign_ip(),
                self._other_browser(ua_text),
            )
            tl.label(ev, "reuse_after_logout", "critical", tag)
            tl.label(ev, "ip_change", "high", tag)
            tl.label(ev, "user_agent_change", "high", tag)
        elif kind == "reuse_after_termination":
            tl.add(t + 30, "terminate", session_id=sid, user=user, actor="admin")
            ev = self._act(t + 30 + skew + r.uniform(30, 900), sid, user, ip, ua_text)
            tl.label(ev, "reuse_after_termination", "critical", tag)
        elif kind == "reuse_after_rotation":
            new = self.sid()
            tl.add(
                t + 30,
                "elevate",
                session_id=sid,
                new_session_id=new,
                user=user,
                ip=ip,
                user_agent=ua_text,
            )
            self._busy(t + 30, new, user, ip, ua_text, 2)
            ev = self._act(t + 30 + skew + r.uniform(30, 600), sid, user, ip, ua_text)
            tl.label(ev, "reuse_after_rotation", "critical", tag)
        elif kind == "locked_out_activity":
            tl.add(t + 30, "lockout", user=user, actor="admin")
            ev = self._act(t + 30 + skew + r.uniform(30, 600), sid, user, ip, ua_text)
            tl.label(ev, "locked_out_activity", "critical", tag)
        elif kind == "inactive_user_activity":
            tl.add(t + 30, "logout", session_id=sid, user=user)
            tl.add(t + 60, "deactivate", user=user, actor="admin")
            ev = tl.add(
                t + 60 + skew + r.uniform(60, 900),
                "login",
                session_id=self.sid(),
                user=user,
                ip=ip,
                user_agent=ua_text,
            )
            tl.label(ev, "inactive_user_activity", "critical", tag)
        elif kind == "idle_timeout_exceeded":
            ev = self._act(
                t + pol.idle_timeout_s + skew + r.uniform(300, 3600), sid, user, ip, ua_text
            )
            tl.label(ev, "idle_timeout_exceeded", "medium", tag)
        elif kind == "lifespan_exceeded":
            limit = login_t + pol.life_span_s + skew
            while True:
                t += r.uniform(300, pol.idle_timeout_s - 300)
                if abs(t - limit) <= 2:
                    # Clear of the limit by seconds either way: exports (ServiceNow's)
                    # keep whole seconds only.
                    t = limit + 5
                ev = self._act(t, sid, user, ip, ua_text)
                if t > limit:
                    break
            tl.label(ev, "lifespan_exceeded", "medium", tag)
        elif kind == "session_fixation":
            if n % 2:
                guest = self.sid()
                self._act(t + 10, guest, None, ip, ua_text, guest=True, url="/login.do")
                ev = tl.add(
                    t + 40,
                    "login",
                    session_id=guest,
                    previous_session_id=guest,
                    user=user,
                    ip=ip,
                    user_agent=ua_text,
                )
            else:
                ev = tl.add(t + 40, "elevate", session_id=sid, user=user, ip=ip, user_agent=ua_text)
            tl.label(ev, "session_fixation", "high", tag)
        elif kind == "insecure_transport":
            ev = self._act(t + 60, sid, user, ip, ua_text, scheme="http")
            tl.label(ev, "insecure_transport", "medium", tag)
        elif kind == "weak_session_id":
            weak = f"SESSION{r.randint(0, 9999):06d}"
            ev = tl.add(t + 60, "login", session_id=weak, user=user, ip=ip, user_agent=ua_text)
            tl.label(ev, "weak_session_id", "medium", tag)
        elif kind == "unknown_session":
            ev = self._act(t + 60, self.sid(), user, ip, ua_text)
            tl.label(ev, "unknown_session", "low", tag)
        elif kind == "concurrent_sessions":
            limit = pol.max_concurrent_sessions
            for i in range(limit):
                extra = self.sid()
                ts = t + 60 * (i + 1)
                ev = tl.add(ts, "login", session_id=extra, user=user, ip=ip, user_agent=ua_text)
                self._act(ts + 20, extra, user, ip, ua_text)
            tl.label(ev, "concurrent_sessions", "low", tag)
        else:
            raise ValueError(f"no such attack: {kind}")

    # -- output -------------------------------------------------------------------
    def build(self, attacks_per_kind: int | None = None) -> _Timeline:
        for i in range(self.users):
            person = self._profile(f"user{i:05d}")
            self._people.append(person)
            self._benign_user(person)
        per_kind = attacks_per_kind or max(1, self.users // 25)
        kinds = list(ATTACKS)
        if not self.policy.life_span_s or self.hours * 3600 < self.policy.life_span_s + 4 * 3600:
            kinds.remove("lifespan_exceeded")
        if not self.policy.max_concurrent_sessions:
            kinds.remove("concurrent_sessions")
        for kind in kinds:
            for n in range(per_kind):
                self.attack(kind, n + 1)
        victims = self._behaviour_victims()
        for n in range(self.behaviour_attacks):
            for kind in BEHAVIOUR_ATTACKS:
                if not victims:
                    raise ValueError("too few users with history for the behavioural attacks")
                self.behaviour_attack(kind, n + 1, victims.pop())
        return self.tl

    # -- behavioural attacks -----------------------------------------------------------
    def _open_stretches(self, name: str) -> list[_Stretch]:
        """A user's work stretches long enough to hide in, after four logins of history."""
        logins = self._logins.get(name, [])
        return [
            st
            for st in self._stretches.get(name, [])
            if st.last - st.start > 1800 and sum(t < st.start for t in logins) >= 4
        ]

    def _behaviour_victims(self) -> list[_Profile]:
        """Benign users with enough history and a long work stretch after it."""
        found = [p for p in self._people if self._open_stretches(p.name)]
        self.rng.shuffle(found)
        return found

    def behaviour_attack(self, kind: str, n: int, p: _Profile) -> None:
        """One attack that only behaviour gives away, on user ``p``'s own traffic."""
        r, tl = self.rng, self.tl
        tag = f"{kind}#{n}"
        logins = self._logins[p.name]
        st = r.choice(self._open_stretches(p.name))
        t = r.uniform(st.start + 300, st.last - 900)
        ip = st.login_ip
        if kind == "bulk_export":
            # A script pulls whole tables through the user's own session, page by page.
            table = r.choice(("incident", "sys_user", "customer_account", "cmdb_ci"))
            for i in range(r.randint(60, 150)):
                t += r.uniform(0.4, 2.5)
                ev = self._act(
                    t,
                    st.sid,
                    p.name,
                    ip,
                    st.ua(t),
                    url=f"/api/now/table/{table}?sysparm_limit=10000&sysparm_offset={i * 10000}",
                    response_bytes=int(r.uniform(2e6, 8e6)),
                )
                if i == 0:
                    tl.label(ev, "behaviour_anomaly", "", tag)
        elif kind == "path_enumeration":
            # Someone maps the instance: many admin pages this user never opens.
            for i, table in enumerate(r.sample(_ADMIN_TABLES, r.randint(25, 40))):
                t += r.uniform(2, 12)
                url = (
                    f"/{table}_list.do" if r.random() < 0.5 else f"/{table}.do?sys_id={self.sid()}"
                )
                ev = self._act(
                    t, st.sid, p.name, ip, st.ua(t), url=url, response_bytes=self._size(p)
                )
                if i == 0:
                    tl.label(ev, "behaviour_anomaly", "", tag)
        elif kind == "off_hours":
            # Stolen credentials used at night, from the user's network and browser.
            day = math.floor((st.start - EPOCH0) / 86400)
            start = EPOCH0 + day * 86400 + r.uniform(1 * 3600, 4.5 * 3600)
            if sum(x < start for x in logins) < 3:
                start += 86400
            sid = self.sid()
            ua_text = self._ua(p)
            ev = tl.add(start, "login", session_id=sid, user=p.name, ip=ip, user_agent=ua_text)
            tl.label(ev, "behaviour_anomaly", "", tag)
            t = start
            # Purposeful: brisker than the user, half the pages ones the user never opens.
            for _ in range(r.randint(6, 15)):
                t += self._gap(p.pace_s / 3)
                url = self._url(p) if r.random() < 0.5 else f"/{r.choice(_ADMIN_TABLES)}_list.do"
                self._act(t, sid, p.name, ip, ua_text, url=url, response_bytes=self._size(p))
            tl.add(t + 30, "logout", session_id=sid, user=p.name)
        else:
            raise ValueError(f"no such behavioural attack: {kind}")

    def write(self, out: IO[bytes], labels_out: IO[bytes] | None = None) -> Stats:
        tl = self.build()
        stats = Stats()
        events = [e for e in sorted(tl.events, key=lambda x: (x[0], x[1])) if e[0] < tl.end]
        for i, (_, _, ev) in enumerate(events, 1):
            ev["event_id"] = f"ev-{self.seed}-{i:09d}"
            if self.rng.random() >= 0.05:  # a few keep numeric epoch time: SPEC.md allows both
                ev["ts"] = rfc3339(ev["ts"])
            out.write(orjson.dumps(ev) + b"\n")
        stats.events = len(events)
        kept = [lb for lb in tl.labels if lb.event["event_id"]]
        stats.attacks = len({lb.attack for lb in kept})
        stats.labels = len(kept)
        if labels_out is not None:
            for lb in kept:
                labels_out.write(
                    orjson.dumps(
                        {
                            "event_id": lb.event["event_id"],
                            "indicator": lb.indicator,
                            "severity": lb.severity or None,
                            "attack": lb.attack,
                        }
                    )
                    + b"\n"
                )
        return stats


#: Attacks that only the behaviour model can see.
BEHAVIOUR_ATTACKS: Final = ("bulk_export", "off_hours", "path_enumeration")
#: Victims of behavioural attacks need this much simulated history.
BEHAVIOUR_MIN_HOURS: Final = 96

ATTACKS: Final = (
    "ip_change",
    "user_agent_change",
    "reuse_after_logout",
    "hijack_after_logout",
    "reuse_after_termination",
    "reuse_after_rotation",
    "locked_out_activity",
    "inactive_user_activity",
    "idle_timeout_exceeded",
    "lifespan_exceeded",
    "session_fixation",
    "insecure_transport",
    "weak_session_id",
    "unknown_session",
    "concurrent_sessions",
)


def benchmark_day(events: int) -> list[bytes]:
    """The first ``events`` lines of the day the benchmarks replay: seeded, one user per
    62 events (so that state grows with the run as a real user base would)."""
    buf = io.BytesIO()
    Simulation(users=max(10, events // 62), hours=24, seed=42).write(buf)
    return buf.getvalue().splitlines()[:events]
