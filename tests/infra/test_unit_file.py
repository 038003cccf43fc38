"""The daemon's systemd unit, rendered from the `ragvisor` role's template with its defaults.

`systemd-analyze verify` must pass with an EMPTY stderr (an unknown or misspelt key is only a
warning, and systemd then ignores the line: a hardening option would silently do nothing), and
`systemd-analyze security --offline=yes` must rate the unit's exposure at 2.5 or below.

The template is rendered by a tiny Ansible run (the template may use Ansible's filters and
facts), with the role's `defaults/main.yml` then `vars/main.yml`. No systemd needs to run:
`systemd-analyze` reads files. `verify` checks that `ExecStart=` names an executable, and the
daemon's virtualenv exists only on a deployed host, so `verify` runs with `--root` on a scratch
tree holding the host's unit directory, the rendered unit and placeholder executables at the
`Exec*=` paths; `test_systemd_deploy.py` verifies the deployed unit with its real executable.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.nspawn import REPO, ansible_playbook, ensure_host_tools, require_root
from tests.infra.unit_analysis import offline_exposure, verify_silently

ROLE = REPO / "roles/ragvisor"
UNIT_NAME = "ragvisor.service"
TEMPLATE = ROLE / "templates" / f"{UNIT_NAME}.j2"
MAX_EXPOSURE = 2.5
SYSTEMD_UNIT_DIR = Path("/usr/lib/systemd/system")
_EXEC_LINE = re.compile(r"^Exec\w+=(.*)$", re.MULTILINE)

pytestmark = pytest.mark.skipif(require_root() is not None, reason=str(require_root()))


def render(template: Path, work: Path, extra_vars: dict[str, Any] | None = None) -> Path:
    """`template` as the role would write it with its defaults (and `extra_vars`)."""
    assert template.is_file(), f"the ragvisor role's template is missing: {template}"
    work.mkdir(parents=True, exist_ok=True)
    rendered = work / template.name.removesuffix(".j2")
    # Later vars files win: the role's defaults, its internal vars, then the test's values.
    overrides = work / "overrides.yml"
    overrides.write_text(yaml.safe_dump(extra_vars or {}))
    vars_files = [str(path) for path in (ROLE / "defaults/main.yml", ROLE / "vars/main.yml")]
    playbook = [
        {
            "name": "Render a ragvisor template with the role's defaults",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": True,
            "vars_files": [path for path in vars_files if Path(path).is_file()] + [str(overrides)],
            "tasks": [
                {
                    "name": "Render the template",
                    "ansible.builtin.template": {
                        "src": str(template),
                        "dest": str(rendered),
                        "mode": "0644",
                    },
                }
            ],
        }
    ]
    playbook_path = work / "render.yml"
    playbook_path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    run = ansible_playbook(playbook_path, Path("localhost,"), work / "state", timeout_s=180)
    assert run.returncode == 0, run.output
    return rendered


@pytest.fixture(scope="module")
def unit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unit as the role would write it with its defaults."""
    ensure_host_tools()  # systemd-analyze comes with systemd, which systemd-container needs
    return render(TEMPLATE, tmp_path_factory.mktemp("unit"))


def _exec_paths(unit_text: str) -> list[str]:
    """Absolute executables of every `Exec*=` line (prefixes like `-`, `+`, `!`, `@` dropped)."""
    paths = []
    for command in _EXEC_LINE.findall(unit_text):
        executable = command.strip().split()[0].lstrip("-+!@:|")
        if executable.startswith("/"):
            paths.append(executable)
    return paths


def _verify_root(unit_file: Path, root: Path, *more_units: Path) -> None:
    """A scratch root for `systemd-analyze verify --root`: systemd's own units (the targets the
    unit names), the rendered units, and an executable placeholder at each `Exec*=` path."""
    shutil.copytree(SYSTEMD_UNIT_DIR, root / SYSTEMD_UNIT_DIR.relative_to("/"), symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in (unit_file, *more_units):
        shutil.copy2(unit, etc / unit.name)
        for executable in _exec_paths(unit.read_text()):
            placeholder = root / executable.lstrip("/")
            placeholder.parent.mkdir(parents=True, exist_ok=True)
            placeholder.write_text("#!/bin/sh\nexit 0\n")
            placeholder.chmod(0o755)


def test_unit_is_type_notify_with_a_watchdog(unit_file: Path) -> None:
    """The settings the deploy test relies on are in the rendered unit."""
    text = unit_file.read_text()
    for line in ("Type=notify", "Restart=on-failure"):
        assert re.search(rf"^{re.escape(line)}\s*$", text, re.MULTILINE), f"{line} not in\n{text}"
    assert re.search(r"^WatchdogSec=\S+", text, re.MULTILINE), text
    assert _exec_paths(text), f"no absolute ExecStart= in\n{text}"


def test_systemd_analyze_verify_is_silent(unit_file: Path, tmp_path: Path) -> None:
    """No error and not a single warning: systemd ignores a line it does not understand."""
    _verify_root(unit_file, tmp_path / "root")
    verify_silently(tmp_path / "root", UNIT_NAME)


def test_systemd_analyze_security_exposure_is_low(unit_file: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the hardening: 0 (tight) to 10 (open)."""
    exposure, report = offline_exposure(unit_file)
    print(f"ragvisor.service exposure (systemd-analyze security --offline=yes): {exposure}")
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{report}"


@pytest.mark.parametrize(
    ("data_dir", "state_directory"),
    [
        ("/var/lib/ragvisor", "ragvisor"),
        ("/var/lib/ragvisor-blue/data", "ragvisor-blue/data"),
        ("/srv/ragvisor/data", None),
    ],
)
def test_state_directory_follows_the_data_dir(
    tmp_path: Path, data_dir: str, state_directory: str | None
) -> None:
    """StateDirectory= names ragvisor_data_dir under /var/lib, and is absent elsewhere (it would
    make systemd create /var/lib/ragvisor, a directory the daemon does not use); the data dir
    is the one ReadWritePaths=."""
    text = render(TEMPLATE, tmp_path, {"ragvisor_data_dir": data_dir}).read_text()
    assert re.search(rf"^ReadWritePaths={re.escape(data_dir)}$", text, re.MULTILINE), text
    found = re.findall(r"^StateDirectory=(.*)$", text, re.MULTILINE)
    assert found == ([state_directory] if state_directory else []), text
    assert re.search(rf"^WorkingDirectory={re.escape(data_dir)}$", text, re.MULTILINE), text


@pytest.mark.parametrize("store", ["sqlite", "neo4j"])
def test_backup_units_verify_silently(tmp_path: Path, unit_file: Path, store: str) -> None:
    """ragvisor-backup.service and .timer pass `systemd-analyze verify` with an empty stderr,
    for both stores; the timer carries the schedule and runs missed backups at boot."""
    extra = {"ragvisor_store_backend": store}
    service = render(ROLE / "templates/ragvisor-backup.service.j2", tmp_path / "service", extra)
    timer = render(ROLE / "templates/ragvisor-backup.timer.j2", tmp_path / "timer", extra)
    _verify_root(unit_file, tmp_path / "root", service, timer)
    verify_silently(tmp_path / "root", "ragvisor-backup.service", "ragvisor-backup.timer")
    timer_text = timer.read_text()
    assert "OnCalendar=*-*-* 03:30:00\n" in timer_text
    assert "Persistent=true\n" in timer_text
    assert ("User=ragvisor\n" in service.read_text()) is (store == "sqlite")
