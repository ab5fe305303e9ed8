"""The checks a verified manifest passes before a byte is fetched; each refusal says why."""

from __future__ import annotations

from edge_runtime.errors import UpdateError
from edge_runtime.update.manifest import Envelope, is_newer
from edge_runtime.update.policy import UpdatePolicy
from edge_runtime.update.ports import Slot
from edge_runtime.update.store import ModelStore


class NotNewerError(UpdateError):
    """The version is not newer than the one serving: for desired state, already satisfied."""


def check_admission(
    env: Envelope,
    *,
    device: str,
    groups: list[str],
    policy: UpdatePolicy,
    slots: dict[str, list[Slot]],
    store: ModelStore,
) -> None:
    """Target, expiry, size limit, a model of that name here, replay, downgrade: UpdateError if not."""
    m = env.manifest
    m.check_target(device, groups)
    m.check_time()
    if m.size > policy.max_bundle_bytes:
        raise UpdateError(f"bundle is {m.size} bytes, over the limit of {policy.max_bundle_bytes}")
    named = slots.get(m.name)
    if not named:
        raise UpdateError(f"no model named {m.name!r} here (have: {', '.join(slots) or 'none'})")
    outcome = store.outcome(env.update_id)
    if outcome is not None:
        raise UpdateError(f"replay: update {env.update_id} was already processed ({outcome})")
    current = named[0].version()
    if not is_newer(m.version, current):
        raise NotNewerError(f"downgrade: version {m.version} is not newer than the active {current}")
