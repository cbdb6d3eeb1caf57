"""Session review API on the worker's web server: ServiceNow's "Logged in users" view.

``GET /sessions?user=U`` lists U's live sessions; ``POST /sessions/{fingerprint}/terminate``
(with ``?user=U``, or none for a guest session) records a ``terminate`` event on
session-events, so the termination goes through the same stream, state and
dedup as the platform's own. Requests reach whichever worker owns the user's
partition (Faust's router forwards them). The API only ever shows and accepts
fingerprints: a terminate event names its session as ``sw-fp:<fingerprint>``.
Every call needs ``Authorization: Bearer <SESSIONWATCH_API_TOKEN>``; with no token
configured the API answers 503.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View
from yarl import URL

from detector.alerts import rfc3339
from detector.engine import Engine
from detector.fingerprint import FINGERPRINT_PREFIX
from detector.stream.bundle import BundleStore
from detector.stream.routing import partition_of

_FINGERPRINT = re.compile(r"^[0-9a-f]{32}$")

#: How long a terminate waits for Kafka to confirm its event before answering 503: an
#: analyst must not read "recorded" for an event still in a buffer while the broker is
#: away (the worker's producer would hold it for 20 minutes).
CONFIRM_S = 10.0


def _owner_url(app: faust.App, topic: str, partitions: int, key: bytes) -> str | None:
    """Web URL of the worker that owns ``key``'s partition; None when it is this worker.

    The partition comes from Kafka's default (murmur2) partitioner, as for the
    events themselves; owners from the partition assignor's distribution map.
    """
    partition = partition_of(key, partitions)
    assignor: Any = app.assignor
    mine = {tp.partition for tp in assignor.assigned_actives() if tp.topic == topic}
    if partition in mine:
        return None
    for url, assignment in assignor.tables_metadata().items():
        for changelog, parts in assignment.items():
            if changelog.endswith("-state-changelog") and partition in parts:
                return str(url)
    return None


FORWARDED = "X-Sessionwatch-Forwarded"


async def _forward(app: faust.App, view: View, request: Request, owner: str) -> Response:
    """Relays the request to the owning worker and its answer back (one hop at most)."""
    target = URL(owner)
    url = request.url.with_host(target.host or "127.0.0.1").with_port(target.port)
    headers = {**request.headers, FORWARDED: "1"}
    async with app.http_client.request(method=request.method, headers=headers, url=url) as resp:
        return view.text(await resp.text(), content_type=resp.content_type, status=resp.status)


def install_api(
    app: faust.App,
    token: str,
    store: BundleStore,
    events_topic: Any,
    engine: Engine,
    partitions: int,
) -> None:
    def denied(view: View, request: Request) -> Response | None:
        if not token:
            return view.error(503, "session API disabled: set SESSIONWATCH_API_TOKEN")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return view.error(401, "missing or wrong bearer token")
        return None

    @app.page("/sessions")
    class Sessions(View):
        async def get(self, request: Request) -> Response:
            refused = denied(self, request)
            if refused is not None:
                return refused
            user = request.query.get("user", "")
            if not user:
                return self.error(400, "query parameter `user` is required")
            key = f"u:{user}".encode()
            owner = _owner_url(app, events_topic.get_topic_name(), partitions, key)
            if owner is not None:
                if request.headers.get(FORWARDED):
                    # Both sides think the other owns it: a rebalance is under way.
                    return self.error(503, "partition ownership is moving; retry shortly")
                return await _forward(app, self, request, owner)
            bundle = store.peek(key)  # with changes not yet written
            now = time.time()
            sessions: list[dict[str, Any]] = []
            if bundle is not None:
                for fp, s in bundle.sessions.items():
                    if not engine.is_active(s, engine.watermark):
                        continue
                    sessions.append(
                        {
                            "session": fp,
                            "user": s.user,
                            "login_time": rfc3339(s.start),
                            "last_activity": rfc3339(s.last),
                            "login_ip": s.login_ip,
                            "last_ip": s.last_ip,
                            "node": s.node,
                            "remember_me": s.remember_me,
                            "idle_seconds": round(max(0.0, engine.watermark - s.last), 3),
                        }
                    )
            sessions.sort(key=lambda x: str(x["login_time"]))
            return self.json(
                {
                    "user": user,
                    "sessions": sessions,
                    "as_of": rfc3339(now),
                    "served_by": str(app.conf.canonical_url),
                }
            )

    @app.page("/sessions/{fingerprint}/terminate")
    class Terminate(View):
        async def post(self, request: Request, fingerprint: str) -> Response:
            refused = denied(self, request)
            if refused is not None:
                return refused
            if not _FINGERPRINT.match(fingerprint):
                return self.error(400, "not a session fingerprint (32 lowercase hex digits)")
            user = request.query.get("user") or None
            actor = request.query.get("actor") or "sessionwatch-api"
            event: dict[str, Any] = {
                "event_id": f"api-{uuid.uuid4().hex}",
                "ts": time.time(),
                "type": "terminate",
                "session_id": FINGERPRINT_PREFIX + fingerprint,
                "actor": actor,
            }
            if user:
                event["user"] = user
            key = f"u:{user}" if user else f"s:{fingerprint}"
            value = orjson.dumps(event)

            async def recorded() -> Any:
                # The send itself waits too when the producer has yet to learn the
                # topic's partitions (its first terminate) and the broker is away.
                sent = await events_topic.send(key=key.encode(), value=value)
                return await asyncio.shield(sent)

            try:
                where = await asyncio.wait_for(recorded(), CONFIRM_S)
            except Exception as exc:  # any failure: the analyst must know to retry
                reason = (
                    f"not confirmed within {CONFIRM_S:g} s"
                    if isinstance(exc, TimeoutError)
                    else f"refused ({type(exc).__name__})"
                )
                return self.error(
                    503,
                    f"terminate event {event['event_id']} {reason} by Kafka; it may still "
                    "arrive: check GET /sessions before trying again",
                )
            return self.json(
                {
                    "recorded": event["event_id"],
                    "session": fingerprint,
                    "partition": where.partition,
                    "offset": where.offset,
                },
                status=202,
            )
