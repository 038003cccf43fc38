"""What `systemd-analyze` says of a unit file, for the role tests: silence from `verify`, and the
exposure figure of `security --offline=yes` (0 tight … 10 open). One place, so every unit the roles
install is judged the same way."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def verify_silently(root: Path, *units: str) -> None:
    """`systemd-analyze verify --root=ROOT UNIT…` exits 0 with an empty stderr: systemd ignores a
    line it does not understand (a misspelt hardening key) and says so only there."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr


def offline_exposure(unit_file: Path) -> tuple[float, str]:
    """The overall exposure `systemd-analyze security --offline=yes` gives the file, and its
    whole report (for the assertion message)."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = _EXPOSURE.search(proc.stdout)
    assert match, f"no exposure line (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return float(match.group(1)), proc.stdout
