"""Pure logic: documents, chunking, hashing, sync planning, retrieval.

Nothing here imports a web framework, a CLI library or a backend; backends are reached through
the protocols in :mod:`ragvisor.core.protocols`.
"""
