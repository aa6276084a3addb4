"""The running operator: kopf wiring (watch events only queue keys), the indexes the snapshots are read from,
the keyed work queue, the HTTP client, configuration, health and metrics."""
