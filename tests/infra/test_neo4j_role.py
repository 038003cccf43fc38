"""The `neo4j` role on this machine (`-c local`), every path it touches under a folder of its own.

Each test pins one finding of issue 14:

- settings declared twice (Neo4j 5 refuses to start): whatever neo4j.conf holds before the run
  — copies above the block, below it, in a file without the block yet, indented — each managed
  setting ends up uncommented exactly once, the second run changes nothing, and absent gives
  back the file as it was;
- `--check --diff` on a fresh host: the archive install runs through and creates nothing;
- the archive install (from the archive `tests/infra/neo4j_dist.py` builds): Java, the neo4j
  user, the version unpacked with `current` pointing at it, neo4j.conf with the settings and
  loopback, the unit; the initial password set before the first start, so the driver gets in
  with it (the server started as the unit's ExecStart starts it: this machine has no systemd);
  the second run reports `changed=0`; absent removes everything, twice without a change.

The unit under a real systemd is covered by the bare-host test (tests/infra/bare_host.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import neo4j_dist
from tests.infra.engine_steps import free_port
from tests.infra.playbook import (
    ANSIBLE_PLAYBOOK,
    REPO,
    PlaybookRun,
    parse_recap,
)

pytestmark = pytest.mark.slow

# It begins with "-" as one vault password in 32 does (token_urlsafe), which neo4j-admin
# once read as an option (a CI run failed on it).
PASSWORD = "-role-test-password-1"
SETTINGS = {
    "server.memory.heap.initial_size": "256m",
    "server.memory.heap.max_size": "256m",
    "server.memory.pagecache.size": "64m",
    "dbms.memory.transaction.total.max": "64m",
    "server.default_listen_address": "127.0.0.1",
}
ROLE_VARS = {"neo4j_heap_size": "256m", "neo4j_pagecache_size": "64m"}
ROLE_VARS["neo4j_transaction_total_max"] = "64m"
BEGIN = "# BEGIN ANSIBLE MANAGED BLOCK: memory settings (role neo4j)"
END = "# END ANSIBLE MANAGED BLOCK: memory settings (role neo4j)"
START_TIMEOUT_S = 180.0


def apply(
    ansible_env: dict[str, str], folder: Path, extra_vars: dict[str, Any], *, check: bool = False
) -> PlaybookRun:
    """The neo4j role alone on localhost with `extra_vars`, `--diff` (and `--check`)."""
    playbook = folder / "neo4j-role.yml"
    playbook.write_text(
        yaml.safe_dump([{"name": "neo4j role", "hosts": "localhost", "roles": [{"role": "neo4j"}]}])
    )
    vars_file = folder / "vars.yml"
    vars_file.write_text(yaml.safe_dump(extra_vars))
    args = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook), "--diff"]
    args += ["-e", f"@{vars_file}"] + (["--check"] if check else [])
    done = subprocess.run(
        args, cwd=REPO, env=ansible_env, capture_output=True, text=True, timeout=600, check=False
    )
    output = done.stdout + done.stderr
    return PlaybookRun(tuple(args), done.returncode, output, parse_recap(done.stdout))


def active_settings(conf: Path) -> list[tuple[str, str]]:
    """The uncommented `key=value` lines of a neo4j.conf, in order, repeats kept."""
    pairs = []
    for line in conf.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            key, value = stripped.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


STARTING_FILES = {
    "copies above, no block yet": (
        "server.memory.heap.max_size=1g\nserver.memory.pagecache.size=2g\n"
        "server.default_listen_address=0.0.0.0\ndbms.security.auth_enabled=true\n"
    ),
    "indented copies": "  server.memory.heap.initial_size = 1g\n\tserver.memory.heap.max_size=1g\n",
    "copies below an old block": (
        f"dbms.security.auth_enabled=true\n{BEGIN}\nserver.memory.heap.max_size=9m\n{END}\n"
        "server.memory.heap.max_size=1g\ndbms.memory.transaction.total.max=1g\n"
    ),
    "copies above and below": (
        f"server.memory.pagecache.size=1g\n{BEGIN}\n{END}\nserver.memory.pagecache.size=3g\n"
    ),
}


@pytest.mark.parametrize("start", STARTING_FILES.values(), ids=STARTING_FILES.keys())
def test_each_setting_appears_once_whatever_the_starting_file(
    ansible_env: dict[str, str], tmp_path: Path, start: str
) -> None:
    """Every managed setting is uncommented exactly once with the role's value; a second run
    changes nothing; absent gives back the starting file byte for byte."""
    conf = tmp_path / "neo4j.conf"
    conf.write_text(start)
    role_vars = {**ROLE_VARS, "neo4j_install": False, "neo4j_conf_path": str(conf)}
    first = apply(ansible_env, tmp_path, role_vars)
    assert first.returncode == 0, first.output[-3000:]
    active = active_settings(conf)
    keys = [key for key, _ in active]
    assert len(keys) == len(set(keys)), conf.read_text()
    assert {key: value for key, value in active if key in SETTINGS} == SETTINGS
    if "auth_enabled" in start:
        assert ("dbms.security.auth_enabled", "true") in active
    second = apply(ansible_env, tmp_path, role_vars)
    assert second.returncode == 0, second.output[-3000:]
    assert second.host().changed == 0, second.output[-3000:]
    absent = apply(ansible_env, tmp_path, {**role_vars, "neo4j_state": "absent"})
    assert absent.returncode == 0, absent.output[-3000:]
    old_block = start.find(BEGIN)
    expected = (
        start if old_block < 0 else start[:old_block] + start[start.find(END) + len(END) + 1 :]
    )
    assert conf.read_text() == expected


@pytest.fixture
def root() -> Iterator[Path]:
    """A folder for the role's paths that the neo4j user can traverse (pytest's are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="ragvisor-neo4j-role-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def archive(neo4j_archive: Path) -> Path:
    """The archive built from Maven Central (the session's `neo4j_archive`), for root only."""
    if os.geteuid() != 0:
        pytest.skip("the archive install creates a system user: it needs root")
    return neo4j_archive


def archive_vars(root: Path, archive: Path, user: str) -> dict[str, Any]:
    """The role's variables for an archive install with every path under `root`."""
    return {
        **ROLE_VARS,
        "neo4j_install_method": "archive",
        "neo4j_archive_src": str(archive),
        "neo4j_archive_sha256": neo4j_dist.sha256_of(archive),
        "neo4j_install_dir": str(root / "opt"),
        "neo4j_data_dir": str(root / "var-lib"),
        "neo4j_log_dir": str(root / "var-log"),
        "neo4j_conf_path": str(root / "etc" / "neo4j.conf"),
        "neo4j_unit_path": str(root / "systemd" / "neo4j.service"),
        "neo4j_user": user,
        "neo4j_initial_password": PASSWORD,
    }


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_check_mode_on_a_fresh_host_runs_through_and_creates_nothing(
    ansible_env: dict[str, str], root: Path, archive: Path
) -> None:
    """`--check --diff` of the archive install on a fresh host succeeds and changes nothing."""
    user = "ragvisor-n4j-chk"
    assert not _user_exists(user)
    run = apply(ansible_env, root, archive_vars(root, archive, user), check=True)
    assert run.returncode == 0, run.output[-4000:]
    assert run.host().changed > 0
    assert sorted(path.name for path in root.iterdir()) == ["neo4j-role.yml", "vars.yml"]
    assert not _user_exists(user)
    assert PASSWORD not in run.output


def test_apt_check_mode_on_a_fresh_host_runs_through(
    ansible_env: dict[str, str], tmp_path: Path
) -> None:
    """`--check --diff` of the apt install on a host without Neo4j succeeds: the package, its
    neo4j.conf and its unit exist only in the plan, and are reported, not failed on."""
    if Path("/etc/apt/sources.list.d/neo4j.sources").exists():
        pytest.skip("this machine has Neo4j's apt repository: it is not a fresh host")
    conf = tmp_path / "etc" / "neo4j.conf"
    # Neo4j's repository is not reachable here: the key comes from a file, as from a mirror.
    key = tmp_path / "neotechnology.gpg.key"
    key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    role_vars = {
        **ROLE_VARS,
        "neo4j_conf_path": str(conf),
        "neo4j_initial_password": PASSWORD,
        "neo4j_apt_key_url": key.as_uri(),
    }
    run = apply(ansible_env, tmp_path, role_vars, check=True)
    assert run.returncode == 0, run.output[-4000:]
    assert "does not exist yet; a real run writes the settings there" in run.output
    assert not conf.parent.exists()
    assert not Path("/etc/apt/sources.list.d/neo4j.sources").exists()


def _console(root: Path, user: str, log_path: Path) -> subprocess.Popen[bytes]:
    """`neo4j console` as the unit runs it: as the neo4j user, NEO4J_HOME and NEO4J_CONF set."""
    env = {
        "PATH": os.environ["PATH"],
        "NEO4J_HOME": str(root / "opt" / "current"),
        "NEO4J_CONF": str(root / "etc"),
    }
    command = ["runuser", "-u", user, "--", str(root / "opt" / "current" / "bin" / "neo4j")]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*command, "console"], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip


@pytest.fixture
def archive_user() -> Iterator[str]:
    """The system user's name for the archive install; removed afterwards if a step failed."""
    name = "ragvisor-n4j"
    assert not _user_exists(name), f"a user {name} is left from an earlier run"
    yield name
    if _user_exists(name):
        subprocess.run(["userdel", name], check=False)
        subprocess.run(["groupdel", name], check=False, capture_output=True)


def test_archive_install_converges_with_its_initial_password(
    ansible_env: dict[str, str], root: Path, archive: Path, archive_user: str
) -> None:
    """Converge, Neo4j answers the driver with the initial password (and not neo4j/neo4j),
    the second run is `changed=0`, absent keeps the databases, absent with neo4j_purge_data
    removes everything, twice without a change."""
    user = archive_user
    role_vars = archive_vars(root, archive, user)
    (root / "systemd").mkdir()  # stands for /etc/systemd/system, which every host has
    first = apply(ansible_env, root, role_vars)
    assert first.returncode == 0, first.output[-4000:]
    assert PASSWORD not in first.output
    current = root / "opt" / "current"
    assert current.resolve() == root / "opt" / neo4j_dist.NEO4J_VERSION
    assert not list((root / "opt").glob("*.tar.gz")), "the copied archive stays"
    conf = root / "etc" / "neo4j.conf"
    active = dict(active_settings(conf))
    assert active["server.default_listen_address"] == "127.0.0.1"
    assert active["server.directories.data"] == str(root / "var-lib" / "data")
    unit = (root / "systemd" / "neo4j.service").read_text()
    assert f"ExecStart={current}/bin/neo4j console" in unit
    assert f"User={user}" in unit
    # Ports of its own on this machine: lines the role does not manage, so they stay.
    port = free_port()
    with conf.open("a") as stream:
        stream.write(f"server.bolt.listen_address=:{port}\n")
        stream.write(f"server.http.listen_address=:{free_port()}\n")
    second = apply(ansible_env, root, role_vars)
    assert second.returncode == 0, second.output[-4000:]
    assert second.host().changed == 0, second.output[-4000:]

    log_path = root / "console.log"
    process = _console(root, user, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"Started." not in log_path.read_bytes():
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "not started within the deadline"
            time.sleep(0.5)
        neo4j_dist.assert_only_password_opens(f"bolt://127.0.0.1:{port}", PASSWORD)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(60)

    third = apply(ansible_env, root, role_vars)
    assert third.returncode == 0, third.output[-4000:]
    assert third.host().changed == 0, "the password is set again after the first start"

    kept = apply(ansible_env, root, {**role_vars, "neo4j_state": "absent"})
    assert kept.returncode == 0, kept.output[-4000:]
    # Without neo4j_purge_data the databases and logs outlive the install.
    assert (root / "var-lib" / "data").is_dir()
    assert (root / "var-log").is_dir()
    assert not _user_exists(user)

    absent = {**role_vars, "neo4j_state": "absent", "neo4j_purge_data": True}
    removed = apply(ansible_env, root, absent)
    assert removed.returncode == 0, removed.output[-4000:]
    # What stays is the operator's own: the two lines this test added to neo4j.conf.
    assert sorted(path.name for path in root.iterdir()) == [
        "console.log", "etc", "neo4j-role.yml", "systemd", "vars.yml",
    ]  # fmt: skip
    assert [key for key, _ in active_settings(conf)] == [
        "server.bolt.listen_address", "server.http.listen_address",
    ]  # fmt: skip
    assert not list((root / "systemd").iterdir())
    assert not _user_exists(user)
    again = apply(ansible_env, root, absent)
    assert again.returncode == 0, again.output[-4000:]
    assert again.host().changed == 0, again.output[-4000:]
