"""The `ragvisor` and `ollama` roles on a real systemd: a container booted with systemd-nspawn.

What only a real service manager can show: `--check --diff` on the fresh container runs
through and changes nothing; the daemon's unit becomes `active (running)` only after the daemon
sends `READY=1`; a daemon frozen with SIGSTOP (its event loop sends no more `WATCHDOG=1`) is
killed and restarted by systemd; the daemon's user may restart Ollama through polkit (polkitd
installed by the role) and nothing else; a unit left failed by a missing corpus folder is
recovered by the next deploy; `systemctl show ollama -p Environment` carries the drop-in's
values; the backup timer is scheduled; a second deploy over SSH changes nothing.

The rig (`tests/infra/nspawn.py`) boots one container per module from a cached Debian rootfs
(built on first use, ~2 min; `python -m tests.infra.nspawn build` prepares it ahead). The roles
are applied with `playbooks/site.yml --tags ollama,ragvisor` (the preflight always runs; swap and
sysctl cannot be set inside a container: the `-c local` tests cover them) over SSH.

What the test puts into the container before the deploy, because the container is offline and
Ollama's install is off:

- a STAND-IN `ollama.service` (`sleep infinity`, no Ollama binary): the `ollama` role with
  `ollama_install: false` only writes the drop-in `ollama.service.d/override.conf`, which needs a
  unit to attach to. Its process shows which environment systemd really gave the service.
- `/etc/pip.conf` pointing pip at the read-only wheelhouse (`--no-index`): the container has no
  network, as an offline host with a local wheel mirror would be configured. (The daemon's own
  install also gets `ragvisor_pip_extra_args`.) The dist folder the role installs from holds the
  wheel built from the checkout and `requirements/constraints.txt`, as docs/deploy.md ships it.
- an apt source naming a local mirror of the packages the role installs (tests/infra/apt_mirror.py):
  polkitd and python3-apt are NOT in the container; the role installs them with apt.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.infra.apt_mirror import build_apt_mirror, mirror_bind, use_in
from tests.infra.nspawn import (
    REPO,
    WHEELHOUSE_MOUNT,
    Bind,
    Container,
    PlaybookRun,
    ansible_playbook,
    build_project_wheel,
    build_rootfs,
    build_wheelhouse,
    require_root,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

T = TypeVar("T")
HOST = "nspawn"
DIST_MOUNT = "/opt/ragvisor-dist"
CORPUS_DIR = "/srv/ragvisor/corpus"
# Short enough to keep the test brief, long enough for a loaded 2-core box (default: 30 s).
WATCHDOG_S = 10
# Values unlike the role's defaults, so the drop-in's content is really from these variables.
OLLAMA_ENV: dict[str, Any] = {
    "OLLAMA_HOST": "127.0.0.1:11434",
    "OLLAMA_KEEP_ALIVE": "0",
    "OLLAMA_MAX_LOADED_MODELS": 1,
    "OLLAMA_NUM_PARALLEL": 1,
    "OLLAMA_CONTEXT_LENGTH": 2048,
    "OLLAMA_LOAD_TIMEOUT": "2m30s",
}
STAND_IN_OLLAMA_UNIT = """\
# STAND-IN written by tests/infra/test_systemd_deploy.py: no Ollama is installed in the test
# container (ollama_install: false); the role's drop-in attaches to this unit.
[Unit]
Description=Stand-in for Ollama (test only)

[Service]
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""
PIP_CONF = f"""\
# Written by tests/infra/test_systemd_deploy.py: the container is offline.
[global]
no-index = true
find-links =
    {WHEELHOUSE_MOUNT}
    {DIST_MOUNT}
"""


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """One booted container for the module, with the wheelhouse and ragvisor's wheel (built
    from the checkout) bound read-only; powered off and cleaned up after the last test,
    whatever happened."""
    session = tmp_path_factory.mktemp("nspawn")
    rootfs = build_rootfs()
    wheelhouse = build_wheelhouse()
    mirror = build_apt_mirror(rootfs)
    dist = session / "dist"
    build_project_wheel(dist)
    shutil.copy2(REPO / "requirements/constraints.txt", dist / "constraints.txt")
    binds = (Bind(wheelhouse, WHEELHOUSE_MOUNT), Bind(dist, DIST_MOUNT), mirror_bind(mirror))
    booted = Container.boot(rootfs, session / "machine", binds=binds)
    try:
        yield booted
    finally:
        booted.stop()


# ---------------------------------------------------------------------------------------------
# The rig itself: what the deploy tests rely on, shown with a tiny Type=notify service.

NOTIFY_SCRIPT = r'''
"""Type=notify test service: READY=1 only once /run/notify-demo/go exists, then WATCHDOG=1."""
import os, pathlib, socket, time

def notify(message):
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)

go = pathlib.Path("/run/notify-demo/go")
while not go.exists():
    time.sleep(0.05)
notify("READY=1\nSTATUS=demo ready")
while True:
    notify("WATCHDOG=1")
    time.sleep(0.3)
'''

NOTIFY_UNIT = """\
[Unit]
Description=ragvisor rig self-test: a Type=notify service with a watchdog

[Service]
Type=notify
ExecStart=/usr/bin/python3 /usr/local/lib/notify-demo.py
WatchdogSec=2
Restart=on-failure
RestartSec=0
TimeoutStartSec=60
"""


def test_rig_runs_systemd_with_notify_and_watchdog(container: Container) -> None:
    """systemd is PID 1; a Type=notify unit stays `activating` until READY=1; SIGSTOP on its
    process makes the watchdog kill and restart it. If this fails, the rig is broken, not the
    roles."""
    assert container.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    container.write_file("/usr/local/lib/notify-demo.py", NOTIFY_SCRIPT)
    container.write_file("/etc/systemd/system/notify-demo.service", NOTIFY_UNIT)
    container.run("rm", "-rf", "/run/notify-demo")
    container.run("mkdir", "-p", "/run/notify-demo")
    container.systemctl("daemon-reload")
    container.systemctl("start", "--no-block", "notify-demo.service")

    first = wait_for(
        lambda: int(container.show("notify-demo", "MainPID")["MainPID"]),
        30,
        "notify-demo to have a main process",
    )
    time.sleep(1.0)  # the process runs, but has not said READY=1
    state = container.show("notify-demo", "ActiveState", "SubState")
    assert (state["ActiveState"], state["SubState"]) == ("activating", "start")

    container.run("touch", "/run/notify-demo/go")
    wait_for(
        lambda: container.show("notify-demo", "ActiveState")["ActiveState"] == "active",
        30,
        "notify-demo to become active after READY=1",
    )
    assert container.show("notify-demo", "StatusText")["StatusText"] == "demo ready"

    container.run("kill", "-STOP", str(first))
    restarted = wait_for(
        lambda: _restarted(container, "notify-demo", first),
        30,
        "the watchdog to restart the frozen notify-demo",
    )
    assert int(restarted["NRestarts"]) >= 1
    assert "Watchdog timeout" in container.journal("notify-demo")
    container.systemctl("stop", "notify-demo.service")


def _restarted(container: Container, unit: str, old_pid: int) -> dict[str, str] | None:
    """The unit's state once it runs again, active, under a new main process; else None."""
    state = container.show(unit, "ActiveState", "MainPID", "NRestarts")
    new_pid = int(state["MainPID"])
    if state["ActiveState"] == "active" and new_pid not in (0, old_pid):
        return state
    return None


def run_deploy(inventory: Path, state_dir: Path, *options: str) -> PlaybookRun:
    """What an operator runs for these two roles (the preflight always runs too)."""
    return ansible_playbook(
        REPO / "playbooks/site.yml", inventory, state_dir, "--tags", "ollama,ragvisor", *options
    )


@dataclass
class Deploy:
    """How to run the deploy again, and what the first run reported."""

    container: Container
    inventory: Path
    state_dir: Path
    first: PlaybookRun

    def run(self) -> PlaybookRun:
        return run_deploy(self.inventory, self.state_dir)


def deploy_vars() -> dict[str, Any]:
    """The host's variables: installs off, the daemon from the session's wheel, offline pip."""
    return {
        # memory-budget preflight (as inventory/local)
        "preflight_chat_model_mb": 1800,
        "preflight_embed_model_mb": 0,
        # ollama: the drop-in only, over the stand-in unit
        "ollama_state": "present",
        "ollama_install": False,
        "ollama_env": OLLAMA_ENV,
        "ollama_models": [],
        # ragvisor: the wheel built from the checkout (in the dist folder, with the
        # constraints), its dependencies from the wheelhouse
        "ragvisor_state": "present",
        "ragvisor_dist_dir": DIST_MOUNT,
        "ragvisor_pip_extra_args": f"--no-index --find-links {WHEELHOUSE_MOUNT} "
        f"--find-links {DIST_MOUNT}",
        "ragvisor_model_requirements": f"{WHEELHOUSE_MOUNT}/models.txt",
        "ragvisor_corpus_paths": [CORPUS_DIR],
        "ragvisor_watchdog_s": WATCHDOG_S,
        "ragvisor_generator_keep_alive": "0",
    }


@dataclass(frozen=True)
class FreshHost:
    """What a fresh container looked like, and the `--check --diff` run on it."""

    before: str
    check: PlaybookRun
    after: str


def _host_snapshot(container: Container) -> str:
    """What a deploy would change, in one comparable text: the daemon's user, the packages, the
    names in the folders the roles write to (names only: a timestamp may move by itself)."""
    script = (
        "getent passwd ragvisor; dpkg-query -W -f='${Package} ${db:Status-Status}\\n' "
        "polkitd python3-apt 2>&1; ls -1A /etc/systemd/system /opt /srv /etc/polkit-1 2>&1; "
        "ls -1A /etc/ragvisor /var/lib/ragvisor /var/backups /usr/local/bin 2>&1; true"
    )
    return container.run("sh", "-c", script).stdout


@pytest.fixture(scope="module")
def fresh_host(container: Container, tmp_path_factory: pytest.TempPathFactory) -> FreshHost:
    """The stand-in Ollama unit, pip's offline config and the offline apt source, then
    `--check --diff` of `ollama` and `ragvisor` over SSH on the untouched container."""
    work = tmp_path_factory.mktemp("check")
    container.write_file("/etc/systemd/system/ollama.service", STAND_IN_OLLAMA_UNIT)
    container.write_file("/etc/pip.conf", PIP_CONF)
    use_in(container)
    container.systemctl("daemon-reload")
    container.systemctl("enable", "--now", "ollama.service")
    inventory = container.write_inventory(
        work / "inventory.yml", host=HOST, host_vars=deploy_vars()
    )
    before = _host_snapshot(container)
    check = run_deploy(inventory, work / "ansible", "--check", "--diff")
    return FreshHost(before, check, _host_snapshot(container))


@pytest.fixture(scope="module")
def deploy(
    container: Container, fresh_host: FreshHost, tmp_path_factory: pytest.TempPathFactory
) -> Deploy:
    """The first deploy of `ollama` and `ragvisor` over SSH (after the dry run), then a
    one-file corpus in the folder the role created."""
    work = tmp_path_factory.mktemp("deploy")
    inventory = container.write_inventory(
        work / "inventory.yml", host=HOST, host_vars=deploy_vars()
    )
    first = run_deploy(inventory, work / "ansible")
    container.write_file(
        f"{CORPUS_DIR}/watchdog.md",
        "# Watchdog\n\nsystemd restarts the daemon when its event loop stops pinging.\n",
    )
    return Deploy(container, inventory, work / "ansible", first)


def _diagnostics(container: Container) -> str:
    status = container.systemctl("status", "ragvisor", "ollama", check=False).stdout
    return f"{status}\n--- journal ragvisor\n{container.journal('ragvisor', 60)}"


# ---------------------------------------------------------------------------------------------
# The deploy


def test_check_mode_on_the_fresh_host_changes_nothing(fresh_host: FreshHost) -> None:
    """`--check --diff` first, as docs/deploy.md says: it runs through on a host without the
    daemon's user, unit, virtualenv, python3-apt or polkitd, predicts changes, and changes
    nothing."""
    counts = fresh_host.check.counts(HOST)
    assert fresh_host.check.returncode == 0, fresh_host.check.output[-8000:]
    assert counts["failed"] == 0
    assert counts["changed"] > 0
    assert fresh_host.after == fresh_host.before


def test_first_deploy_converges(deploy: Deploy) -> None:
    """A first deploy on a fresh container succeeds, reaches the host and changes it."""
    counts = deploy.first.counts(HOST)
    assert deploy.first.returncode == 0, deploy.first.output[-8000:]
    assert counts["failed"] == 0
    assert counts["unreachable"] == 0
    assert counts["changed"] > 0, "a first deploy on a fresh container must change something"


def test_daemon_is_active_under_its_hardened_unit(deploy: Deploy) -> None:
    """Running as its own user, from the role's virtualenv, having said READY=1 with a status."""
    container = deploy.container
    state = container.show(
        "ragvisor", "Type", "ActiveState", "SubState", "MainPID", "StatusText", "WatchdogUSec"
    )
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), _diagnostics(
        container
    )
    assert state["Type"] == "notify"
    assert state["WatchdogUSec"] == f"{WATCHDOG_S}s"
    assert state["StatusText"].startswith("ready:"), state["StatusText"]
    pid = state["MainPID"]
    owner = container.run("stat", "-c", "%U", f"/proc/{pid}").stdout.strip()
    assert owner == "ragvisor"
    health = container.run(
        "python3",
        "-c",
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:8321/healthz', timeout=10).read().decode())",
    )
    assert json.loads(health.stdout)["status"] == "ok", health.stdout


def test_the_deployed_daemon_serves_its_pages_from_the_installed_package(deploy: Deploy) -> None:
    """The pages and the vendored Swagger UI travel in the wheel the role installs."""
    fetched = deploy.container.run(
        "python3",
        "-c",
        "import urllib.request\n"
        "for path in ('/', '/ui/status', '/docs', '/ui/static/vendor/swagger-ui/swagger-ui.css'):\n"
        "    r = urllib.request.urlopen('http://127.0.0.1:8321' + path, timeout=10)\n"
        "    print(path, r.status, len(r.read()))",
    )
    lines = fetched.stdout.split("\n")
    assert [line.split()[1] for line in lines if line] == ["200"] * 4, fetched.stdout


def test_deployed_unit_verifies_in_place(deploy: Deploy) -> None:
    """`systemd-analyze verify` on the deployed unit, with its real executable and user."""
    proc = deploy.container.run(
        "systemd-analyze", "verify", "/etc/systemd/system/ragvisor.service", check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr


def test_unit_is_active_only_after_ready(deploy: Deploy) -> None:
    """Freeze the daemon as soon as it is started, before its warm-up ends: systemd keeps the
    unit `activating` (the process runs, but READY=1 never came); thawed, it becomes active."""
    container = deploy.container
    for _attempt in range(3):
        old_pid = int(container.show("ragvisor", "MainPID")["MainPID"])
        container.systemctl("restart", "--no-block", "ragvisor.service")
        pid = wait_for(
            functools.partial(_new_main_pid, container, old_pid),
            60,
            "ragvisor to get a new main process",
            every_s=0.02,
        )
        container.run("kill", "-STOP", str(pid))
        if container.show("ragvisor", "ActiveState")["ActiveState"] == "activating":
            break
        container.run("kill", "-CONT", str(pid))  # it was faster than us: try again
    else:
        pytest.fail("the daemon sent READY=1 before it could be frozen, three times")
    try:
        time.sleep(3.0)
        state = container.show("ragvisor", "ActiveState", "SubState", "MainPID")
        assert (state["ActiveState"], state["SubState"]) == ("activating", "start")
        assert state["MainPID"] == str(pid)
    finally:
        container.run("kill", "-CONT", str(pid))
    wait_for(
        lambda: container.show("ragvisor", "ActiveState")["ActiveState"] == "active",
        120,
        "ragvisor to become active after its warm-up",
    )
    journal = container.journal("ragvisor", 200)
    assert "systemd.ready" in journal, journal


def test_frozen_daemon_is_restarted_by_the_watchdog(deploy: Deploy) -> None:
    """SIGSTOP the whole daemon: no WATCHDOG=1 within WatchdogSec, systemd kills and restarts."""
    container = deploy.container
    wait_for(
        lambda: container.show("ragvisor", "ActiveState")["ActiveState"] == "active",
        120,
        "ragvisor to be active before it is frozen",
    )
    before = container.show("ragvisor", "MainPID", "NRestarts")
    frozen = int(before["MainPID"])
    container.run("kill", "-STOP", str(frozen))
    after = wait_for(
        lambda: _running_again(container, frozen),
        WATCHDOG_S + 120,
        "the watchdog to restart the frozen daemon",
        every_s=0.5,
    )
    assert int(after["NRestarts"]) > int(before["NRestarts"])
    journal = container.journal("ragvisor", 300)
    assert "Watchdog timeout" in journal, journal


def test_ollama_gets_the_drop_in_environment(deploy: Deploy) -> None:
    """`systemctl show ollama -p Environment` lists the drop-in's values, and the (stand-in)
    process was restarted into them."""
    container = deploy.container
    shown = container.show("ollama", "Environment", "DropInPaths", "MainPID")
    environment = dict(item.split("=", 1) for item in shlex.split(shown["Environment"]))
    expected = {key: _systemd_text(value) for key, value in OLLAMA_ENV.items()}
    assert {key: environment.get(key) for key in expected} == expected
    assert "/etc/systemd/system/ollama.service.d/override.conf" in shown["DropInPaths"].split()
    process_env = container.run("cat", f"/proc/{shown['MainPID']}/environ").stdout.split("\0")
    assert {f"{key}={value}" for key, value in expected.items()} <= set(process_env)


def test_role_installed_polkitd_and_the_daemon_may_restart_ollama(deploy: Deploy) -> None:
    """polkitd was missing and the role installed it; as the daemon's user, `systemctl restart
    ollama` (the ladder's last rung) restarts Ollama, and restarting anything else is refused."""
    container = deploy.container
    status = container.run("dpkg-query", "-W", "-f=${db:Status-Status}", "polkitd").stdout
    assert status == "installed"
    before = int(container.show("ollama", "MainPID")["MainPID"])
    allowed = container.run(
        "runuser", "-u", "ragvisor", "--", "systemctl", "restart", "ollama.service", check=False
    )
    assert allowed.returncode == 0, allowed.stderr
    assert int(container.show("ollama", "MainPID")["MainPID"]) not in (0, before)
    refused = container.run(
        "runuser", "-u", "ragvisor", "--", "systemctl", "restart", "ssh.service", check=False
    )
    assert refused.returncode != 0
    assert "Access denied" in refused.stderr or "authentication" in refused.stderr.lower()


def test_corpus_folder_is_created_readable_by_the_daemon(deploy: Deploy) -> None:
    """The role creates the missing corpus folder, root's and readable by the daemon's group."""
    stat = deploy.container.run("stat", "-c", "%U:%G %a", CORPUS_DIR).stdout.split()
    assert stat == ["root:ragvisor", "750"]


def test_daemon_runs_from_a_versioned_virtualenv(deploy: Deploy) -> None:
    """`current` points at versions/<version>-<the wheel's sha256 prefix>, built with the
    constraints (the pinned versions are what is installed)."""
    container = deploy.container
    wheel = container.run("sh", "-c", f"ls {DIST_MOUNT}/ragvisor-*.whl").stdout.split()[0]
    digest = container.run("sha256sum", wheel).stdout.split()[0]
    version = Path(wheel).name.split("-")[1]
    target = container.run("readlink", "/opt/ragvisor/current").stdout.strip()
    assert target == f"/opt/ragvisor/versions/{version}-{digest[:12]}"
    pins = (REPO / "requirements/constraints.txt").read_text()
    fastapi_pin = re.search(r"^fastapi==(\S+)$", pins, re.MULTILINE)
    assert fastapi_pin is not None
    shown = container.run(f"{target}/bin/pip", "show", "fastapi").stdout
    assert f"Version: {fastapi_pin.group(1)}" in shown


def test_deployed_unit_exposure_is_at_most_2_5(deploy: Deploy) -> None:
    """`systemd-analyze security ragvisor.service` on the running unit; prints the figure."""
    proc = deploy.container.run(
        "systemd-analyze", "security", "--no-pager", "ragvisor.service", check=False
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    print(f"ragvisor.service exposure (deployed): {match.group(1)}")
    assert float(match.group(1)) <= 2.5, proc.stdout


def test_backup_timer_is_scheduled(deploy: Deploy) -> None:
    """ragvisor-backup.timer is enabled and active, with the role's default schedule."""
    container = deploy.container
    timer = container.show(
        "ragvisor-backup.timer", "ActiveState", "UnitFileState", "TimersCalendar"
    )
    assert (timer["ActiveState"], timer["UnitFileState"]) == ("active", "enabled"), timer
    assert "03:30:00" in timer["TimersCalendar"], timer
    verify = container.run(
        "systemd-analyze",
        "verify",
        "/etc/systemd/system/ragvisor-backup.service",
        "/etc/systemd/system/ragvisor-backup.timer",
        check=False,
    )
    assert (verify.returncode, verify.stderr) == (0, ""), verify.stderr


def test_backup_service_writes_a_backup(deploy: Deploy) -> None:
    """Starting ragvisor-backup.service writes one timestamped backup (needs `ragvisor backup`)."""
    container = deploy.container
    has_backup = container.run(
        "/opt/ragvisor/current/bin/ragvisor", "backup", "--help", check=False
    )
    if has_backup.returncode != 0:
        pytest.skip("this ragvisor has no `backup` command yet: the timer's run is not tested")
    run = container.systemctl("start", "ragvisor-backup.service", check=False, timeout_s=300)
    assert run.returncode == 0, container.journal("ragvisor-backup", 40)
    listing = container.run("ls", "/var/backups/ragvisor").stdout.split()
    assert len(listing) == 1, listing
    assert re.fullmatch(r"\d{8}T\d{6}Z", listing[0]), listing


def test_a_unit_failed_for_a_missing_folder_is_recovered_by_the_next_deploy(deploy: Deploy) -> None:
    """The corpus folder removed, restarts fail until systemd's start limit refuses more (the
    state a first deploy without the folder left); the next deploy creates the folder, resets
    the failed unit and starts it."""
    container = deploy.container
    container.run("rm", "-rf", CORPUS_DIR)
    for _ in range(6):
        container.systemctl("restart", "ragvisor.service", check=False, timeout_s=120)
    state = container.show("ragvisor", "ActiveState", "Result")
    assert state["ActiveState"] == "failed", state
    again = deploy.run()
    assert again.returncode == 0, again.output[-8000:]
    state = container.show("ragvisor", "ActiveState")
    assert state["ActiveState"] == "active", _diagnostics(container)
    container.write_file(
        f"{CORPUS_DIR}/watchdog.md",
        "# Watchdog\n\nsystemd restarts the daemon when its event loop stops pinging.\n",
    )


def test_second_deploy_changes_nothing(deploy: Deploy) -> None:
    """Running the same playbook again changes nothing: the roles are idempotent."""
    second = deploy.run()
    counts = second.counts(HOST)
    assert second.returncode == 0, second.output[-8000:]
    assert counts["failed"] == 0
    assert counts["changed"] == 0, second.changed_tasks()


def _systemd_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _new_main_pid(container: Container, old_pid: int) -> int | None:
    pid = int(container.show("ragvisor", "MainPID")["MainPID"])
    return pid if pid not in (0, old_pid) else None


def _running_again(container: Container, old_pid: int) -> dict[str, str] | None:
    """The unit's state once it is active again under a new main process; else None."""
    state = container.show("ragvisor", "ActiveState", "MainPID", "NRestarts")
    if state["ActiveState"] == "active" and int(state["MainPID"]) not in (0, old_pid):
        return state
    return None
