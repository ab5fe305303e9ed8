"""The checks of a remote config document after its signature: what the device will not run.

Secrets must not travel, the YAML must pass the loader that ``validate`` uses (the reason names
the key and the line of the document), and what could lock the device out cannot change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from edge_runtime.config.loader import collect_problems
from edge_runtime.config.sections import Config
from edge_runtime.control.envelope import ConfigDoc
from edge_runtime.errors import ControlError

PROBLEMS_REPORTED = 5
# who the device is, whom it trusts, where its state is: never changed remotely
LOCKED = (
    ("device", "id"),
    ("updates", "public_keys"),
    ("control", "state_dir"),
    ("control", "require_signed"),
)


def check_document(doc: ConfigDoc, running: Config, *, scratch: Path, folder: Path) -> tuple[Config, str]:
    """The document as a Config and the text to store, or ControlError saying why not.

    A document without ``device:`` (one for a group) keeps this device's own section: it is put in
    front of the text (the reported line numbers are the document's own). ``scratch`` is where the
    text is written for the loader; relative paths are relative to ``folder``.
    """
    try:
        data = yaml.safe_load(doc.config)
    except yaml.YAMLError:
        data = None  # the loader below says where
    mqtt = data.get("mqtt") if isinstance(data, dict) else None
    if isinstance(mqtt, dict) and mqtt.get("password") is not None:
        raise ControlError("mqtt.password: secrets never travel in config documents (use mqtt.password_file)")
    text, added = doc.config, 0
    if isinstance(data, dict) and "device" not in data:
        own = {"id": running.device.id, "groups": list(running.device.groups)}
        text, added = f"device: {json.dumps(own)}  # this device's own\n{text}", 1
    candidate = scratch
    scratch.parent.mkdir(parents=True, exist_ok=True)
    candidate.write_text(text)
    cfg, problems = collect_problems(candidate, folder=folder)
    if cfg is None:
        where = re.compile(rf"^{re.escape(str(candidate))}:(\d+):")
        shown = [
            where.sub(lambda m: f"config v{doc.version}:{int(m.group(1)) - added}:", p)
            for p in problems[:PROBLEMS_REPORTED]
        ]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise ControlError("; ".join(shown) + more)
    for section, key in LOCKED:
        if getattr(getattr(cfg, section), key) != getattr(getattr(running, section), key):
            raise ControlError(f"{section}.{key} cannot be changed remotely (edit the local file)")
    return cfg, text
