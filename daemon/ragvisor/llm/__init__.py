"""Generators: the Ollama client (the one way to any generator) and the embedded worker."""
