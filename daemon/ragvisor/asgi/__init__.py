"""ASGI plumbing the two HTTP programs share — the daemon's API (`ragvisor.web`) and the
embedded worker's Ollama-compatible API (`ragvisor.llm.worker`): one request log."""

__all__ = ["request_log"]
