"""Health: per-pipeline metrics, system probes, the periodic telemetry reporter."""
