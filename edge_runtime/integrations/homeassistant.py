"""Home Assistant MQTT discovery payloads (docs/integrations.md#home-assistant): pure functions.

Device-based discovery: one retained message on ``<prefix>/device/<node_id>/config`` holds the
device (``dev``), the origin (``o``), the availability (our retained status topic: its JSON
``state`` is ``online`` or ``offline``) and every entity (``cmps``), keys abbreviated as Home
Assistant documents them. Entity states are small JSON documents on ``P/D/ha/<pipeline>`` and
``P/D/ha/device``, published on change and at most every ``state_interval_s``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PipelineInfo:
    """What discovery needs of one pipeline: its model's task and the labels that get entities."""

    name: str
    task: str  # detection, classification, anomaly, regression
    labels: tuple[str, ...] = ()


def slug(text: str) -> str:
    """Lower-case letters, digits and ``_`` (Home Assistant's object ids and our unique ids)."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


def discovery_topic(prefix: str, node_id: str) -> str:
    """Where the device's one retained discovery message goes."""
    return f"{prefix}/device/{slug(node_id)}/config"


def state_topic(base: str, pipeline: str | None) -> str:
    """A pipeline's state topic, or the device's (``pipeline`` None)."""
    return f"{base}/ha/{pipeline if pipeline is not None else 'device'}"


def discovery(
    *,
    node_id: str,
    device: str,
    version: str,
    base: str,
    status_topic: str,
    pipelines: Sequence[PipelineInfo],
    models: Sequence[str],
    origin_url: str | None = None,
) -> dict[str, Any]:
    """The discovery message's body (``models``: the model slots' names; ``origin_url``: the
    support URL Home Assistant shows for the origin, left out when None)."""
    node = slug(node_id)
    components: dict[str, dict[str, Any]] = {}
    for p in pipelines:
        components.update(_pipeline_components(node, base, p))
    device_state = state_topic(base, None)
    components[f"{node}_outbox_backlog"] = _sensor(
        f"{node}_outbox_backlog",
        "Outbox backlog",
        device_state,
        "{{ value_json.outbox_backlog }}",
        "messages",
    ) | {"ent_cat": "diagnostic", "ic": "mdi:tray-full"}
    for slot in models:
        uid = f"{node}_model_{slug(slot)}_version"
        template = _jinja(f"value_json.models['{_quoted(slot)}']")
        components[uid] = _sensor(uid, f"Model {slot} version", device_state, template, None) | {
            "ent_cat": "diagnostic",
            "ic": "mdi:brain",
        }
    return {
        "dev": {
            "ids": [f"edge_runtime_{node}"],
            "name": device,
            "mf": "edge-runtime",
            "mdl": "edge-runtime",
            "sw": version,
        },
        "o": {"name": "edge-runtime", "sw": version} | ({"url": origin_url} if origin_url else {}),
        "avty": [
            {
                "t": status_topic,
                "val_tpl": "{{ value_json.state }}",
                "pl_avail": "online",
                "pl_not_avail": "offline",
            }
        ],
        "cmps": components,
        "qos": 1,
    }


def removal(components: Mapping[str, str]) -> dict[str, Any]:
    """A discovery body that removes ``components`` (id -> platform): each reduced to its ``p``."""
    return {"cmps": {uid: {"p": platform} for uid, platform in components.items()}}


def platforms(body: Mapping[str, Any]) -> dict[str, str]:
    """Component id -> platform of a discovery body (what a later start must remove if gone)."""
    return {uid: str(c["p"]) for uid, c in body.get("cmps", {}).items()}


def _jinja(expression: str) -> str:
    """A value template (the braces are Jinja's, not ours)."""
    return "{{ " + expression + " }}"


def _quoted(name: str) -> str:
    """A name inside a Jinja string literal: quotes and backslashes dropped (they would end it)."""
    return name.replace("'", "").replace("\\", "")


def _sensor(uid: str, name: str, topic: str, template: str, unit: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"p": "sensor", "uniq_id": uid, "name": name, "stat_t": topic, "val_tpl": template}
    if unit is not None:
        out |= {"unit_of_meas": unit, "stat_cla": "measurement"}
    return out


def _binary(uid: str, name: str, topic: str, template: str, device_class: str) -> dict[str, Any]:
    return {
        "p": "binary_sensor",
        "uniq_id": uid,
        "name": name,
        "stat_t": topic,
        "val_tpl": template,
        "dev_cla": device_class,
        "pl_on": "ON",
        "pl_off": "OFF",
    }


def _pipeline_components(node: str, base: str, p: PipelineInfo) -> dict[str, dict[str, Any]]:
    topic, key = state_topic(base, p.name), f"{node}_{slug(p.name)}"
    out: dict[str, dict[str, Any]] = {}
    if p.task == "detection":
        for label in p.labels:
            quoted = _quoted(label)
            out[f"{key}_{slug(label)}_occupancy"] = _binary(
                f"{key}_{slug(label)}_occupancy",
                f"{p.name} {label}",
                topic,
                _jinja(f"'ON' if value_json.counts['{quoted}'] > 0 else 'OFF'"),
                "occupancy",
            )
            out[f"{key}_{slug(label)}_count"] = _sensor(
                f"{key}_{slug(label)}_count",
                f"{p.name} {label} count",
                topic,
                _jinja(f"value_json.counts['{quoted}']"),
                "objects",
            )
    elif p.task == "classification":
        out[f"{key}_top"] = _sensor(f"{key}_top", f"{p.name} class", topic, "{{ value_json.top }}", None)
    elif p.task == "anomaly":
        out[f"{key}_score"] = _sensor(
            f"{key}_score", f"{p.name} anomaly score", topic, "{{ value_json.score }}", ""
        )
        out[f"{key}_flag"] = _binary(
            f"{key}_flag", f"{p.name} anomaly", topic, "{{ 'ON' if value_json.flag else 'OFF' }}", "problem"
        )
    out[f"{key}_fps"] = _sensor(f"{key}_fps", f"{p.name} fps", topic, "{{ value_json.fps }}", "fps") | {
        "ent_cat": "diagnostic"
    }
    out[f"{key}_inference"] = _sensor(
        f"{key}_inference", f"{p.name} inference latency", topic, "{{ value_json.inference_ms }}", "ms"
    ) | {"dev_cla": "duration", "ent_cat": "diagnostic"}
    return out


def pipeline_state(
    result: Any, labels: Sequence[str], fps: float | None, inference_ms: float | None
) -> dict[str, Any]:
    """A pipeline's state document from its latest result (None: no result yet)."""
    state: dict[str, Any] = {"fps": fps, "inference_ms": inference_ms}
    if result is None:
        return state | {"counts": {_quoted(label): 0 for label in labels}}
    detections = getattr(result, "detections", ())
    state["counts"] = {_quoted(label): sum(1 for d in detections if d.label == label) for label in labels}
    classes = getattr(result, "classes", ())
    state["top"] = classes[0].label if classes else None
    score = getattr(result, "score", None)
    if score is not None:
        state["score"] = round(float(score), 4)
        state["flag"] = bool(getattr(result, "flag", False))
    return state
