"""Configuration: pydantic v2 models (one module per section) and a YAML loader that knows lines."""
