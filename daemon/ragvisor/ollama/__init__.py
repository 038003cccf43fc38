"""Speaking Ollama's HTTP API: the async client, model names, and what its answers mean.

The daemon's generator client, the Ollama embedder, the embedded worker (which imitates the
API), the supervisors and the on-call checks all speak this protocol; its rules — which names
are one model, which statuses are retried, which deadline a timeout stands for — live here once.
"""
