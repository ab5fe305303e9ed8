"""The fleet as rows: stable JSON objects (docs/fleet.md#fleet-status) and a text table."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from edge_runtime.fleet.records import Device

FAILED = ("rejected", "rolled_back")


def serving(d: Device) -> dict[str, dict[str, str | None]]:
    """Each configured model's name and the version serving now.

    The birth (or will) names the versions at connect; an update committed or rolled back since
    then shows only in the retained model status, whose ``active_version`` wins when it is newer.
    """
    out = {key: {"name": name, "version": version} for key, (name, version) in sorted(d.models.items())}
    u = d.update
    if u is not None and u.active_version and u.ts is not None and (d.since is None or u.ts >= d.since):
        for model in out.values():
            if model["name"] == u.name:
                model["version"] = u.active_version
    return out


def last_error(d: Device) -> str | None:
    """The first of: a pipeline's or the outbox's error (last health), a failed update's reason."""
    if d.health is not None and d.health.errors:
        return d.health.errors[0]
    if d.update is not None and d.update.state in FAILED:
        return f"update {d.update.version}: {d.update.state}: {d.update.reason}"
    return None


def row(d: Device) -> dict[str, Any]:
    """One device as a JSON object; every key is always present (null when unknown)."""
    u, h = d.update, d.health
    return {
        "device": d.id,
        "online": d.online,
        "since": d.since,
        "offline_reason": None if d.online is not False else d.reason,
        "session": d.session,
        "runtime_version": d.runtime,
        "groups": list(d.groups),
        "models": serving(d),
        "update": None
        if u is None
        else {
            "id": u.id,
            "state": u.state,
            "name": u.name,
            "version": u.version,
            "step": u.step,
            "progress": u.progress,
            "reason": u.reason,
            "ts": u.ts,
        },
        "pipelines": None
        if h is None
        else {name: {"fps": fps, "state": h.source_state.get(name)} for name, fps in sorted(h.fps.items())},
        "outbox_pending": None if h is None else h.outbox_pending,
        "health_ts": None if h is None else h.ts,
        "last_error": last_error(d),
    }


def _age(ts: float | None, now: float) -> str:
    if ts is None:
        return "?"
    s = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _cells(r: dict[str, Any], now: float) -> list[str]:
    online = {True: "online", False: "offline", None: "?"}[r["online"]]
    u = r["update"]
    update = "-" if u is None else f"{u['state']} {u['version']}"
    if u is not None and u["state"] == "downloading" and u["progress"] is not None:
        update += f" {u['progress']:.0%}"
    pipes = r["pipelines"]
    fps = "-" if pipes is None else " ".join(f"{n}={_num(p['fps'])}" for n, p in pipes.items())
    return [
        r["device"],
        f"{online} {_age(r['since'], now)}",
        ",".join(r["groups"]) or "-",
        " ".join(f"{m['name']}@{m['version']}" for m in r["models"].values()) or "-",
        update,
        fps,
        "-" if r["outbox_pending"] is None else str(r["outbox_pending"]),
        r["last_error"] or "-",
    ]


HEADER = ["DEVICE", "STATE", "GROUPS", "MODELS", "UPDATE", "FPS", "OUTBOX", "LAST ERROR"]


def table(rows: Iterable[dict[str, Any]], now: float | None = None) -> str:
    """Rows as aligned text columns (the last column is not padded)."""
    stamp = time.time() if now is None else now
    lines = [HEADER, *(_cells(r, stamp) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER) - 1)]
    out = ("  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]]) for line in lines)
    return "\n".join(line.rstrip() for line in out)
