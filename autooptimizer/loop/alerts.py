"""Alerts the loop raises (a rollback, an aborted cycle): always appended to `loop/alerts.jsonl` under AUTOOPT_HOME
and logged; also POSTed to Alertmanager's v2 API (`/api/v2/alerts`) when AUTOOPT_ALERTMANAGER_URL is set."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from autooptimizer.settings import Settings

log = logging.getLogger("autooptimizer.alerts")


def raise_alert(settings: Settings, name: str, summary: str, *, severity: str = "warning",
                labels: dict[str, str] | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    delivered_to: list[str] = ["file"]
    record: dict[str, Any] = {"ts": time.time(), "alertname": name, "severity": severity, "summary": summary,
                              "labels": labels or {}, "details": details or {}, "delivered_to": delivered_to}
    url = os.environ.get("AUTOOPT_ALERTMANAGER_URL")
    if url:
        payload = [{"labels": {"alertname": name, "severity": severity, "service": "autooptimizer", **(labels or {})},
                    "annotations": {"summary": summary},
                    "startsAt": datetime.now(UTC).isoformat()}]
        try:
            httpx.post(url.rstrip("/") + "/api/v2/alerts", json=payload, timeout=5).raise_for_status()
            delivered_to.append("alertmanager")
        except httpx.HTTPError as exc:
            record["alertmanager_error"] = str(exc)
    path = settings.path("loop", "alerts.jsonl")
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
    log.warning("ALERT %s: %s", name, summary)
    return record
