"""The daemon's routes, one module per concern: `search`, `ask`, `ops` (health, readiness,
status, metrics, admin)."""

__all__ = ["ask", "ops", "search"]
