"""The daemon's runtime: the object graph it runs on, and the reports it gives about itself."""

from ragvisor.runtime.reports import readiness, status
from ragvisor.runtime.services import Services

__all__ = ["Services", "readiness", "status"]
