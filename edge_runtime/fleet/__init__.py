"""Operator side of a fleet: status, staged rollouts (and the update server).

A composition package like ``commands/`` (docs/architecture.md): it reads what devices publish
with the same bounded parsing the device uses, so it may import stage packages.
"""
