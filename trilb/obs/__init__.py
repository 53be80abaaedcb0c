"""Observability: logging setup (and later metrics, admin)."""
