"""The HTTP face of the daemon (FastAPI); it only translates between HTTP and the services."""

from ragvisor.web.app import create_app

__all__ = ["create_app"]
