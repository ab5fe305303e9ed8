"""Operator side of a fleet: serving update chunks (and, beside it, rollouts and status).

A composition package like ``commands/`` (docs/architecture.md): it runs on the operator's
machine, never in the daemon, and may use the update package's manifest and bounded parser.
"""
