"""Signed model updates: manifests and keys, bundles, transfer, the versioned store, the manager."""
