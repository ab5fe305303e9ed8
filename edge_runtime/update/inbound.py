"""Bounded parsing of update messages: the leaf :mod:`edge_runtime.boundedjson` (shared with control/)."""

from __future__ import annotations

from edge_runtime.boundedjson import nesting_ok, parse_json

__all__ = ["nesting_ok", "parse_json"]
