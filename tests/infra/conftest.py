"""Fixtures of the infrastructure tests.

`ansible_env` keeps Ansible's state out of the home directory. `local_host` makes this machine
the managed host of `inventory/local`: it checks that the machine can run the tests at all (root,
a working `swapon`), restores the host from any earlier run that died, builds the ragvisor wheel
the local inventory installs, and afterwards — whatever the tests did — applies the inventory
with every state set to absent and removes the test directory.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import testinfra

from tests.infra import neo4j_dist
from tests.infra.engine_steps import EngineError
from tests.infra.localhost import (
    ABSENT,
    TEST_ROOT,
    WHEEL_DIR,
    build_wheel,
    emergency_cleanup,
    swapon_refusal,
)
from tests.infra.nspawn import host_kernel_lock
from tests.infra.playbook import PlaybookRun, ansible_environment, run_playbook


@pytest.fixture(scope="session")
def ansible_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of every ansible-playbook and ansible-lint run."""
    return ansible_environment(tmp_path_factory.mktemp("ansible-state"))


def remove_everything(env: dict[str, str]) -> PlaybookRun:
    """Apply inventory/local with every role's state set to absent."""
    return run_playbook("site.yml", inventory="local", env=env, extra_vars=ABSENT, timeout_s=300)


@pytest.fixture(scope="session")
def local_host(
    ansible_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """This machine, ready for inventory/local, and left as it was found afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the local apply needs root: it enables a swap file and creates a user")
    refusal = swapon_refusal(tmp_path_factory.mktemp("swap-probe"))
    if refusal is not None:
        pytest.skip(f"this machine cannot enable a swap file ({refusal})")
    with host_kernel_lock():
        yield from _local_host(ansible_env)


def _local_host(ansible_env: dict[str, str]) -> Iterator[None]:
    """local_host()'s body, inside the host-kernel lock (a bare host's swap is the host's too)."""
    remove_everything(ansible_env)
    shutil.rmtree(TEST_ROOT, ignore_errors=True)
    build_wheel(WHEEL_DIR)
    try:
        yield
    finally:
        teardown = remove_everything(ansible_env)
        shutil.rmtree(TEST_ROOT, ignore_errors=True)
        if teardown.returncode != 0:
            undone = emergency_cleanup()
            sys.stderr.write(f"absent play failed; undone by hand: {undone}\n{teardown.output}")
            pytest.fail(f"the absent play failed (rc={teardown.returncode}); see stderr")


@pytest.fixture(scope="session")
def host() -> testinfra.host.Host:
    """testinfra's view of this machine."""
    return testinfra.get_host("local://")


@pytest.fixture(scope="session")
def neo4j_archive() -> Path:
    """Neo4j's distribution archive from Maven Central (tests/infra/neo4j_dist.py), built or
    taken from the cache once per session; skips, saying why, without Maven and a JDK."""
    missing = neo4j_dist.missing_tools()
    if missing:
        pytest.skip(f"building the Neo4j archive needs {', '.join(missing)}")
    try:
        return neo4j_dist.build()
    except EngineError as exc:
        pytest.fail(f"the Neo4j archive could not be built: {exc}")
