"""Upgrades and rollback of the `ragvisor` role, on a real systemd (a container booted with
systemd-nspawn, tests/infra/nspawn.py).

The scenario, one deploy after the other on the same container, each with the wheels an
operator would have in `dist/`:

1. ragvisor 0.1.0 (the checkout, as built) is deployed: `current` -> versions/0.1.0-<sha>;
2. 0.1.1 is added and deployed: one new virtualenv, exactly one restart, `/healthz` says 0.1.1;
3. the same deploy again: `changed=0`, no restart;
4. 0.1.1 rebuilt (same version, other bytes — what pip used to skip): a new virtualenv, one
   restart;
5. a deliberately broken 0.1.2 (its `serve` exits at once): the new version never sends
   READY=1, the role switches `current` back, restarts the previous version and fails the
   play saying so; the service stays up on 0.1.1;
6. `ragvisor_version: 0.1.1` pinned: `changed=0`; with `ragvisor_keep_versions: 2` the oldest
   virtualenvs are removed, never the one in use.

The variant wheels are built from a copy of the checkout with the version (and, for 5, the
`serve` command) edited; restarts are counted from systemd's own journal lines.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.infra.apt_mirror import build_apt_mirror, mirror_bind, use_in
from tests.infra.nspawn import (
    REPO,
    WHEELHOUSE_MOUNT,
    Bind,
    Container,
    PlaybookRun,
    ansible_playbook,
    build_rootfs,
    build_wheelhouse,
    require_root,
)
from tests.infra.variants import BASE_VERSION, build_variant

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

HOST = "nspawn"
DIST_MOUNT = "/opt/ragvisor-dist"
VERSIONS = "/opt/ragvisor/versions"
CURRENT = "/opt/ragvisor/current"
PIP_CONF = f"""\
# Written by tests/infra/test_ragvisor_upgrade.py: the container is offline.
[global]
no-index = true
find-links =
    {WHEELHOUSE_MOUNT}
    {DIST_MOUNT}
"""


@dataclass
class Rig:
    """The container, the dist folder it sees, and how to deploy into it."""

    container: Container
    dist: Path
    work: Path
    runs: int = 0
    host_vars: dict[str, Any] = field(default_factory=dict)

    def deploy(self, **overrides: Any) -> PlaybookRun:
        """`playbooks/ragvisor.yml` over SSH with the rig's variables and `overrides`."""
        self.runs += 1
        inventory = self.container.write_inventory(
            self.work / f"inventory-{self.runs}.yml",
            host=HOST,
            host_vars={**self.host_vars, **overrides},
        )
        return ansible_playbook(REPO / "playbooks/ragvisor.yml", inventory, self.work / "ansible")

    def starts(self) -> int:
        """How many times systemd started ragvisor.service so far (its own journal lines)."""
        journal = self.container.run(
            "journalctl", "--no-pager", "-o", "cat", "-u", "ragvisor.service", check=False
        ).stdout
        return len(re.findall(r"^Started ragvisor\.service", journal, re.MULTILINE))

    def current(self) -> str:
        return self.container.run("readlink", CURRENT).stdout.strip()

    def versions(self) -> list[str]:
        return sorted(self.container.run("ls", VERSIONS).stdout.split())

    def served_version(self) -> str:
        """The version the running daemon reports on /healthz."""
        proc = self.container.run(
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen("
            "'http://127.0.0.1:8321/healthz', timeout=10).read().decode())",
        )
        return str(json.loads(proc.stdout)["version"])

    def active(self) -> bool:
        return self.container.show("ragvisor", "ActiveState")["ActiveState"] == "active"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A booted container with the wheelhouse, the offline apt mirror and a dist folder that
    holds the constraints and ragvisor 0.1.0."""
    session = tmp_path_factory.mktemp("upgrade")
    rootfs = build_rootfs()
    wheelhouse = build_wheelhouse()
    mirror = build_apt_mirror(rootfs)
    dist = session / "dist"
    build_variant(dist, BASE_VERSION)
    shutil.copy2(REPO / "requirements/constraints.txt", dist / "constraints.txt")
    binds = (Bind(wheelhouse, WHEELHOUSE_MOUNT), Bind(dist, DIST_MOUNT), mirror_bind(mirror))
    container = Container.boot(rootfs, session / "machine", binds=binds)
    try:
        container.write_file("/etc/pip.conf", PIP_CONF)
        use_in(container)
        host_vars = {
            "preflight_chat_model_mb": 1800,
            "preflight_embed_model_mb": 0,
            "ragvisor_dist_dir": DIST_MOUNT,
            "ragvisor_model_requirements": f"{WHEELHOUSE_MOUNT}/models.txt",
            "ragvisor_generator_backend": "none",
            "ragvisor_watchdog_s": 10,
            "ragvisor_backup_enabled": False,
            "ragvisor_keep_versions": 5,
        }
        yield Rig(container, dist, session, host_vars=host_vars)
    finally:
        container.stop()


@dataclass(frozen=True)
class Step:
    """One deploy: its run, and what the service looked like before and after it."""

    run: PlaybookRun
    starts_before: int
    starts_after: int
    current: str
    versions: list[str]


def _step(rig: Rig, **overrides: Any) -> Step:
    before = rig.starts()
    run = rig.deploy(**overrides)
    return Step(run, before, rig.starts(), rig.current(), rig.versions())


def _ok(step: Step) -> None:
    assert step.run.returncode == 0, step.run.output[-8000:]
    assert step.run.counts(HOST)["failed"] == 0


@pytest.fixture(scope="module")
def first(rig: Rig) -> Step:
    return _step(rig)


@pytest.fixture(scope="module")
def upgraded(rig: Rig, first: Step) -> Step:
    build_variant(rig.dist, "0.1.1")
    return _step(rig)


@pytest.fixture(scope="module")
def repeated(rig: Rig, upgraded: Step) -> Step:
    return _step(rig)


@pytest.fixture(scope="module")
def rebuilt(rig: Rig, repeated: Step) -> Step:
    (rig.dist / "ragvisor-0.1.1-py3-none-any.whl").unlink()
    build_variant(rig.dist, "0.1.1", salt="rebuilt")
    return _step(rig)


@pytest.fixture(scope="module")
def broken(rig: Rig, rebuilt: Step) -> Step:
    build_variant(rig.dist, "0.1.2", broken=True)
    return _step(rig)


@pytest.fixture(scope="module")
def pinned(rig: Rig, broken: Step) -> Step:
    return _step(rig, ragvisor_version="0.1.1")


@pytest.fixture(scope="module")
def pruned(rig: Rig, pinned: Step) -> Step:
    return _step(rig, ragvisor_version="0.1.1", ragvisor_keep_versions=2)


def test_first_deploy_runs_the_wheel_from_its_own_virtualenv(rig: Rig, first: Step) -> None:
    """0.1.0 is installed into versions/0.1.0-<sha256 prefix>, `current` points there, and the
    daemon serves it."""
    _ok(first)
    assert re.fullmatch(rf"{VERSIONS}/0\.1\.0-[0-9a-f]{{12}}", first.current), first.current
    assert rig.active()
    assert rig.served_version() == "0.1.0"


def test_upgrade_restarts_exactly_once_into_the_new_version(rig: Rig, upgraded: Step) -> None:
    """A higher version in dist/ is installed beside the old one and switched to with one
    restart; /healthz reports it."""
    _ok(upgraded)
    assert upgraded.starts_after - upgraded.starts_before == 1
    assert upgraded.current.startswith(f"{VERSIONS}/0.1.1-")
    assert len(upgraded.versions) == 2
    assert rig.served_version() == "0.1.1"


def test_the_same_wheel_again_changes_nothing(repeated: Step, upgraded: Step) -> None:
    """Deploying the same wheel again: changed=0 and no restart."""
    _ok(repeated)
    assert repeated.run.counts(HOST)["changed"] == 0, repeated.run.output[-6000:]
    assert repeated.starts_after == repeated.starts_before
    assert repeated.current == upgraded.current


def test_a_rebuilt_wheel_of_the_same_version_is_installed(
    rig: Rig, rebuilt: Step, repeated: Step
) -> None:
    """Other bytes under the same version make another virtualenv, and one restart (pip alone
    would call the version installed and skip it)."""
    _ok(rebuilt)
    assert rebuilt.current != repeated.current
    assert rebuilt.current.startswith(f"{VERSIONS}/0.1.1-")
    assert rebuilt.starts_after - rebuilt.starts_before == 1
    assert rig.active()


def test_a_version_that_does_not_start_is_rolled_back(
    rig: Rig, broken: Step, rebuilt: Step
) -> None:
    """0.1.2 exits before READY=1: the play fails naming the rollback, `current` points at the
    previous version again, and the service is up on it."""
    assert broken.run.returncode != 0
    text = " ".join(broken.run.output.split())
    assert "ragvisor 0.1.2" in text, text[-4000:]
    assert "did not start" in text, text[-4000:]
    assert f"Rolled back to {Path(rebuilt.current).name}" in text, text[-4000:]
    assert broken.current == rebuilt.current
    assert rig.active()
    assert rig.served_version() == "0.1.1"


def test_pinning_the_working_version_changes_nothing(pinned: Step, rebuilt: Step) -> None:
    """ragvisor_version: 0.1.1 keeps the running version: changed=0, no restart."""
    _ok(pinned)
    assert pinned.run.counts(HOST)["changed"] == 0, pinned.run.output[-6000:]
    assert pinned.starts_after == pinned.starts_before
    assert pinned.current == rebuilt.current


def test_versions_beyond_the_kept_number_are_removed(pruned: Step, pinned: Step) -> None:
    """With ragvisor_keep_versions: 2 the two newest virtualenvs stay (the one in use among
    them), the older ones go."""
    _ok(pruned)
    assert len(pinned.versions) == 4  # 0.1.0, 0.1.1, 0.1.1 rebuilt, 0.1.2
    assert len(pruned.versions) == 2
    assert Path(pruned.current).name in pruned.versions
    assert not any(name.startswith("0.1.0-") for name in pruned.versions)
