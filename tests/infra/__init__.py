"""Tests of the provisioning: Ansible roles on this host and on a real systemd (nspawn)."""
