"""Integrations: annotated snapshots, Prometheus metrics, the local status page and Home Assistant
discovery (docs/integrations.md). A stage package: it imports no other stage; what it shows of the
pipelines, the outbox and the link comes through the values and callables app.py passes in."""
