"""The daemon's runtime: the services it runs on (`services`), its start and staged stop with
the one scheduler (`lifecycle`), the folder watch (`corpus_watch`), what it reports about itself
(`reports`), and its side of systemd (`sdnotify`, `watchdog`). Nothing is imported here, so a
light module can take one part without loading the rest."""

__all__ = ["corpus_watch", "lifecycle", "reports", "sdnotify", "services", "watchdog"]
