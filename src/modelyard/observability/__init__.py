"""Observability: Prometheus metrics fed by the accounting of every request."""
