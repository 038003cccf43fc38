"""ragvisor: a supervisor daemon for self-hosted semantic search and Q&A on small CPU boxes."""

__version__ = "0.1.0"
