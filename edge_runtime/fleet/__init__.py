"""Operator side of fleet management: senders of commands and configs (and the update server).

Composition like commands/: it may import any stage (docs/architecture.md).
"""
