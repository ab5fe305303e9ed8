"""edge-runtime: an inference daemon for edge boards."""

__version__ = "0.1.0"
