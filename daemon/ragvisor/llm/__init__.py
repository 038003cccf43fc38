"""The pinned chat model (GGUF) and the embedded worker, a program of its own (`worker/`)."""
