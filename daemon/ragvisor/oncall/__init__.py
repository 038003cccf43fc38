"""On-call logic for the commands an operator runs against a daemon: the Nagios check
(`health`, formatted by `nagios`), the status table (`status`) and the one client of the
daemon's HTTP API they share (`daemon_client`). The command line itself only parses and
prints (`ragvisor.cli`)."""

__all__ = ["daemon_client", "health", "nagios", "status"]
