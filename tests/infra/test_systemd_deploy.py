"""The `ragvisor` and `ollama` roles on a real systemd: a container booted with systemd-nspawn.

What only a real service manager can show: the daemon's unit becomes `active (running)` only
after the daemon sends `READY=1`; a daemon frozen with SIGSTOP (its event loop sends no more
`WATCHDOG=1`) is killed and restarted by systemd; `systemctl show ollama -p Environment` carries
the drop-in's values; a second deploy over SSH changes nothing.

The rig (`tests/infra/nspawn.py`) boots one container per module from a cached Debian rootfs
(built on first use, ~2 min; `python -m tests.infra.nspawn build` prepares it ahead). The roles
are applied with `playbooks/site.yml --tags ollama,ragvisor` (the preflight always runs; swap and
sysctl cannot be set inside a container: the `-c local` tests cover them) over SSH.

Two things the test puts into the container before the deploy, because installs are off:

- a STAND-IN `ollama.service` (`sleep infinity`, no Ollama binary): the `ollama` role with
  `ollama_install: false` only writes the drop-in `ollama.service.d/override.conf`, which needs a
  unit to attach to. Its process shows which environment systemd really gave the service.
- `/etc/pip.conf` pointing pip at the read-only wheelhouse (`--no-index`): the container has no
  network, as an offline host with a local wheel mirror would be configured. (The daemon's own
  install also gets `ragvisor_pip_extra_args`; the role's model-requirements task takes no extra
  pip arguments, so it needs pip's configuration.)
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

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
    dist = session / "dist"
    build_project_wheel(dist)
    binds = (Bind(wheelhouse, WHEELHOUSE_MOUNT), Bind(dist, DIST_MOUNT))
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


def run_deploy(inventory: Path, state_dir: Path) -> PlaybookRun:
    """What an operator runs for these two roles (the preflight always runs too)."""
    return ansible_playbook(
        REPO / "playbooks/site.yml", inventory, state_dir, "--tags", "ollama,ragvisor"
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
        # ragvisor: the wheel built from the checkout, its dependencies from the wheelhouse
        "ragvisor_state": "present",
        "ragvisor_install_from": "ragvisor",
        "ragvisor_pip_extra_args": f"--no-index --find-links {WHEELHOUSE_MOUNT} "
        f"--find-links {DIST_MOUNT}",
        "ragvisor_model_requirements": f"{WHEELHOUSE_MOUNT}/models.txt",
        "ragvisor_corpus_paths": [CORPUS_DIR],
        "ragvisor_watchdog_s": WATCHDOG_S,
        "ragvisor_generator_keep_alive": "0",
    }


@pytest.fixture(scope="module")
def deploy(container: Container, tmp_path_factory: pytest.TempPathFactory) -> Deploy:
    """The stand-in Ollama unit, pip's offline config and a one-file corpus, then the first
    deploy of `ollama` and `ragvisor` over SSH."""
    work = tmp_path_factory.mktemp("deploy")
    container.write_file("/etc/systemd/system/ollama.service", STAND_IN_OLLAMA_UNIT)
    container.write_file("/etc/pip.conf", PIP_CONF)
    container.write_file(
        f"{CORPUS_DIR}/watchdog.md",
        "# Watchdog\n\nsystemd restarts the daemon when its event loop stops pinging.\n",
    )
    container.systemctl("daemon-reload")
    container.systemctl("enable", "--now", "ollama.service")
    inventory = work / "inventory.yml"
    container.write_inventory(inventory, host=HOST, host_vars=deploy_vars())
    return Deploy(container, inventory, work / "ansible", run_deploy(inventory, work / "ansible"))


def _diagnostics(container: Container) -> str:
    status = container.systemctl("status", "ragvisor", "ollama", check=False).stdout
    return f"{status}\n--- journal ragvisor\n{container.journal('ragvisor', 60)}"


# ---------------------------------------------------------------------------------------------
# The deploy


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


def test_second_deploy_changes_nothing(deploy: Deploy) -> None:
    """Running the same playbook again changes nothing: the roles are idempotent."""
    second = deploy.run()
    counts = second.counts(HOST)
    assert second.returncode == 0, second.output[-8000:]
    assert counts["failed"] == 0
    assert counts["changed"] == 0, _changed_tasks(second.output)


def _systemd_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _changed_tasks(output: str) -> str:
    """The task headers followed by a `changed:` line: what was not idempotent."""
    found = re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:.*\n)*?changed: ", output)
    return "changed tasks: " + "; ".join(found) + "\n" + output[-6000:]


def _new_main_pid(container: Container, old_pid: int) -> int | None:
    pid = int(container.show("ragvisor", "MainPID")["MainPID"])
    return pid if pid not in (0, old_pid) else None


def _running_again(container: Container, old_pid: int) -> dict[str, str] | None:
    """The unit's state once it is active again under a new main process; else None."""
    state = container.show("ragvisor", "ActiveState", "MainPID", "NRestarts")
    if state["ActiveState"] == "active" and int(state["MainPID"]) not in (0, old_pid):
        return state
    return None
