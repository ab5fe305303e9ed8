"""Operator side of a fleet: the update server (chunks), fleet status, staged rollouts, and the
senders of commands and remote configs (fleet cmd, fleet config).

A composition package like ``commands/`` (docs/architecture.md): it runs on the operator's
machine, never in the daemon, and may use the update package's manifest and bounded parser and
control's signed envelopes.
"""
