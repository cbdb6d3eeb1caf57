"""Alerts as OCSF Detection Findings (class 2004), for SIEMs that speak OCSF.

``finding_info.uid`` is the alert_id, so a re-sent duplicate is the same finding.
Evidence carries the alert's details, the client endpoint and the user with the
session *fingerprint* (never the raw ID). MITRE ATT&CK: a stolen session used is
T1550.004 (Use Alternate Authentication Material: Web Session Cookie); weaknesses
that let one be stolen (fixation, weak IDs, cleartext transport) are T1539 (Steal
Web Session Cookie).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from detector import __version__
from detector.alerts import Alert

CLASS_UID = 2004
CATEGORY_UID = 2  # Findings
ACTIVITY_CREATE = 1
OCSF_VERSION = "1.3.0"
SEVERITY_ID = {"low": 2, "medium": 3, "high": 4, "critical": 5}

_T1550_004 = {
    "technique": {"uid": "T1550.004", "name": "Web Session Cookie"},
    "sub_technique": {"uid": "T1550.004", "name": "Web Session Cookie"},
    "tactic": {"uid": "TA0008", "name": "Lateral Movement"},
    "tactics": [
        {"uid": "TA0005", "name": "Defense Evasion"},
        {"uid": "TA0008", "name": "Lateral Movement"},
    ],
    "version": "v15",
}
_T1539 = {
    "technique": {"uid": "T1539", "name": "Steal Web Session Cookie"},
    "tactic": {"uid": "TA0006", "name": "Credential Access"},
    "tactics": [{"uid": "TA0006", "name": "Credential Access"}],
    "version": "v15",
}
#: Which technique each indicator is evidence of; indicators not listed carry none.
ATTACK = {
    "ip_change": _T1550_004,
    "user_agent_change": _T1550_004,
    "reuse_after_logout": _T1550_004,
    "reuse_after_termination": _T1550_004,
    "reuse_after_rotation": _T1550_004,
    "locked_out_activity": _T1550_004,
    "inactive_user_activity": _T1550_004,
    "idle_timeout_exceeded": _T1550_004,
    "lifespan_exceeded": _T1550_004,
    "unknown_session": _T1550_004,
    "concurrent_sessions": _T1550_004,
    "impossible_travel": _T1550_004,
    "behaviour_anomaly": _T1550_004,
    "session_fixation": _T1539,
    "weak_session_id": _T1539,
    "insecure_transport": _T1539,
}


def _analytic(kind: str) -> dict[str, Any]:
    """OCSF analytic type: the indicators are rules, ``behaviour_anomaly`` a learned model."""
    if kind == "behaviour_anomaly":
        return {"name": kind, "type_id": 4, "type": "Learning (ML/DL)"}
    return {"name": kind, "type_id": 1, "type": "Rule"}


def _epoch_ms(ts: str) -> int:
    return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def finding(alert: Alert) -> dict[str, Any]:
    """One alert as an OCSF Detection Finding."""
    at = _epoch_ms(alert.ts)
    info: dict[str, Any] = {
        "uid": alert.alert_id,
        "title": f"sessionwatch: {alert.kind.replace('_', ' ')}",
        "types": [alert.kind],
        "analytic": _analytic(alert.kind),
        "created_time": at,
        "related_events": [{"uid": alert.event_id}],
    }
    attack = ATTACK.get(alert.kind)
    if attack is not None:
        info["attacks"] = [attack]
    evidence: dict[str, Any] = {
        "data": alert.details,
        "actor": {
            "user": {"name": alert.user} if alert.user else None,
            "session": {"uid": alert.session},
        },
    }
    if alert.ip:
        evidence["src_endpoint"] = {"ip": alert.ip}
    if evidence["actor"]["user"] is None:
        del evidence["actor"]["user"]
    return {
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "time": at,
        "severity_id": SEVERITY_ID[alert.severity],
        "severity": alert.severity.capitalize(),
        "status_id": 1,
        "status": "New",
        "is_alert": True,
        "message": f"{alert.kind} on session {alert.session[:8]}… of {alert.user or 'a guest'}",
        "finding_info": info,
        "evidences": [evidence],
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "sessionwatch",
                "vendor_name": "sessionwatch",
                "version": __version__,
            },
            "uid": alert.alert_id,
        },
        "remediation": {"desc": f"recommended action: {alert.action} (mode {alert.mode})"},
        "unmapped": {"action": alert.action, "mode": alert.mode, "event_id": alert.event_id},
    }
