"""This machine as the managed host of `inventory/local`: its settings, its observable state, and
what the tests need to prepare and restore it.

`host_state()` captures everything the local inventory may change (active swap areas,
vm.swappiness, /etc/fstab, /etc/sysctl.d, the test user, the files under the test root), so a
test can compare the host before and after a run.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.infra.playbook import INVENTORY, REPO

ROLES = REPO / "roles"


def _load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def group_vars(inventory: str) -> dict[str, Any]:
    """The `ragvisor` group's variables of `inventory/<inventory>`, as YAML data (unrendered)."""
    return _load_yaml(INVENTORY / inventory / "group_vars" / "ragvisor.yml")


def role_defaults(role: str) -> dict[str, Any]:
    """`roles/<role>/defaults/main.yml`, as YAML data (unrendered)."""
    return _load_yaml(ROLES / role / "defaults" / "main.yml")


LOCAL = group_vars("local")
TEST_ROOT = Path(LOCAL["local_test_root"])


def local_path(key: str) -> Path:
    """A path variable of the local inventory, with `{{ local_test_root }}` filled in."""
    return Path(str(LOCAL[key]).replace("{{ local_test_root }}", str(TEST_ROOT)))


SWAP_FILE = Path(LOCAL["swap_file_path"])
SYSCTL_FILE = Path(LOCAL["swap_sysctl_file"])
NEO4J_CONF = local_path("neo4j_conf_path")
OLLAMA_DROPIN = local_path("ollama_dropin_dir") / "override.conf"
RAGVISOR_USER = str(LOCAL["ragvisor_user"])
RAGVISOR_VENV = local_path("ragvisor_venv")
RAGVISOR_CONFIG = local_path("ragvisor_config_path")
RAGVISOR_UNIT = local_path("ragvisor_unit_dir") / "ragvisor.service"
WHEEL_DIR = local_path("ragvisor_dist_src")

ABSENT = {
    "swap_file_state": "absent",
    "neo4j_state": "absent",
    "ollama_state": "absent",
    "ragvisor_state": "absent",
}


def active_swaps() -> dict[str, tuple[str, int]]:
    """/proc/swaps as {path: (type, size in KiB)}."""
    lines = Path("/proc/swaps").read_text(encoding="utf-8").splitlines()[1:]
    return {fields[0]: (fields[1], int(fields[2])) for fields in map(str.split, lines)}


def _exists(lookup: Any, name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def host_state() -> dict[str, Any]:
    """Everything inventory/local may change, in a form two snapshots can be compared in."""
    # Files only: the directories under the test root stand for directories every real host
    # has (/etc/systemd/system, /etc/neo4j, /etc/polkit-1/rules.d), which a removal leaves.
    test_files = sorted(
        str(path.relative_to(TEST_ROOT))
        for path in TEST_ROOT.rglob("*")
        if not path.is_dir() and WHEEL_DIR not in path.parents
    )
    return {
        "swaps": active_swaps(),
        "vm.swappiness": Path("/proc/sys/vm/swappiness").read_text(encoding="utf-8").strip(),
        "/etc/fstab": Path("/etc/fstab").read_text(encoding="utf-8"),
        "/etc/sysctl.d": sorted(path.name for path in Path("/etc/sysctl.d").iterdir()),
        "swap file exists": SWAP_FILE.exists(),
        "user exists": _exists(pwd.getpwnam, RAGVISOR_USER),
        "group exists": _exists(grp.getgrnam, RAGVISOR_USER),
        "test files": test_files,
    }


def swapon_refusal(scratch: Path) -> str | None:
    """Why this machine cannot enable a swap file (a container, a filesystem without swap
    support), or None when it can: a 1 MiB file is formatted, enabled and disabled again.
    """
    for tool in ("mkswap", "swapon", "swapoff", "blkid", "sysctl", "fallocate"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = scratch / "probe.swap"
    probe.write_bytes(b"\0" * (1 << 20))
    probe.chmod(0o600)
    try:
        for argv in (["mkswap", str(probe)], ["swapon", str(probe)], ["swapoff", str(probe)]):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            if done.returncode != 0:
                return f"`{' '.join(argv)}` failed: {done.stderr.strip()}"
    finally:
        probe.unlink()
    return None


def build_wheel(target: Path) -> Path:
    """Build the ragvisor wheel into `target` from a copy of the checkout's sources, so that the
    build leaves nothing (build/, *.egg-info) in the checkout. Returns the wheel's path.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ragvisor-wheel-") as tmp:
        source = Path(tmp) / "src"
        (source / "daemon").mkdir(parents=True)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, source / name)
        shutil.copytree(
            REPO / "daemon" / "ragvisor",
            source / "daemon" / "ragvisor",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(target), source],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    wheels = sorted(target.glob("ragvisor-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip wheel left no ragvisor wheel in {target}")
    return wheels[-1]


def emergency_cleanup() -> list[str]:
    """Undo by hand what matters most to the host when the absent play itself failed: the swap,
    its fstab line, the sysctl file and the test user. Returns what it had to undo.
    """
    undone = []
    if str(SWAP_FILE) in active_swaps():
        subprocess.run(["swapoff", str(SWAP_FILE)], timeout=120, check=False)
        undone.append(f"swapoff {SWAP_FILE}")
    fstab = Path("/etc/fstab")
    lines = fstab.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(f"{SWAP_FILE} ")]
    if kept != lines:
        fstab.write_text("".join(kept), encoding="utf-8")
        undone.append("fstab line")
    for path in (SWAP_FILE, SYSCTL_FILE):
        if path.exists():
            path.unlink()
            undone.append(f"rm {path}")
    if _exists(pwd.getpwnam, RAGVISOR_USER):
        subprocess.run(["userdel", RAGVISOR_USER], timeout=60, check=False)
        undone.append(f"userdel {RAGVISOR_USER}")
    with contextlib.suppress(KeyError):
        grp.getgrnam(RAGVISOR_USER)
        subprocess.run(["groupdel", RAGVISOR_USER], timeout=60, check=False)
        undone.append(f"groupdel {RAGVISOR_USER}")
    return undone
