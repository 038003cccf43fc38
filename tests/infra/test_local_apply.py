"""`playbooks/site.yml` with `inventory/local` on this machine: check, converge, idempotence,
verify, remove, verify again.

The scenario, as Molecule would run it (Docker is not available here, so it runs with
`ansible_connection=local` on the test machine itself):

1. `--check --diff` on a clean host predicts changes and changes nothing;
2. the first apply converges; 3. the second reports `changed=0`; 4. so does `--check` now;
5. testinfra verifies the live swap, vm.swappiness, the fstab line, the sysctl.d file, the
   Ollama drop-in, neo4j.conf, the daemon's user, virtualenv, configuration and unit;
   a changed swap_file_size_mb resizes the active swap file, and back; the daemon pointed at
   the real Neo4j (the session's engine) with a vaulted password gets a private password file,
   and no output shows the password;
6. applying with every state absent restores the host exactly; 7. a second removal changes
   nothing. The session fixture `local_host` removes everything even when a step fails.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ragvisor.app import build_store
from ragvisor.config import parse_settings, read_toml
from ragvisor.oncall.doctor import diagnose
from ragvisor.oncall.doctor_checks import Severity
from ragvisor.oncall.host_facts import read_host
from tests.infra.localhost import (
    ABSENT,
    LOCAL,
    NEO4J_CONF,
    OLLAMA_DROPIN,
    RAGVISOR_CONFIG,
    RAGVISOR_UNIT,
    RAGVISOR_USER,
    RAGVISOR_VENV,
    SWAP_FILE,
    SYSCTL_FILE,
    TEST_ROOT,
    active_swaps,
    host_state,
    local_path,
    role_defaults,
)
from tests.infra.playbook import BIN, PlaybookRun, run_playbook

pytestmark = pytest.mark.slow

FSTAB_LINE = f"{SWAP_FILE} none swap sw 0 0"
# The role's default ragvisor_neo4j_password_file: beside the configuration.
NEO4J_PASSWORD_FILE = RAGVISOR_CONFIG.parent / "neo4j.password"


@dataclass(frozen=True)
class Converged:
    """Steps 1-4 of the scenario: the runs and the host's state around the check run."""

    clean: dict[str, Any]
    check: PlaybookRun
    after_check: dict[str, Any]
    first: PlaybookRun
    second: PlaybookRun
    check_again: PlaybookRun


@dataclass(frozen=True)
class Removed:
    """Steps 6-7: the removal runs and the host's state afterwards."""

    first: PlaybookRun
    second: PlaybookRun
    state: dict[str, Any]


@pytest.fixture(scope="module")
def converged(local_host: None, ansible_env: dict[str, str]) -> Converged:
    """Run steps 1-4 once for the module."""
    clean = host_state()
    check = run_playbook("site.yml", inventory="local", env=ansible_env, check=True)
    after_check = host_state()
    first = run_playbook("site.yml", inventory="local", env=ansible_env)
    second = run_playbook("site.yml", inventory="local", env=ansible_env)
    check_again = run_playbook("site.yml", inventory="local", env=ansible_env, check=True)
    return Converged(clean, check, after_check, first, second, check_again)


@pytest.fixture(scope="module")
def removed(converged: Converged, ansible_env: dict[str, str]) -> Removed:
    """Run steps 6-7 once, after every test of the converged host."""
    first = run_playbook("site.yml", inventory="local", env=ansible_env, extra_vars=ABSENT)
    second = run_playbook("site.yml", inventory="local", env=ansible_env, extra_vars=ABSENT)
    return Removed(first, second, host_state())


def _succeeded(run: PlaybookRun) -> None:
    assert run.returncode == 0, run.output[-6000:]
    assert run.host().failed == 0
    assert run.host().unreachable == 0


def _environment_lines(text: str) -> dict[str, str]:
    """The `Environment="KEY=value"` lines of a unit or drop-in, as a mapping."""
    pairs = re.findall(r'^Environment="([^=]+)=(.*)"$', text, flags=re.MULTILINE)
    return dict(pairs)


def _settings_lines(text: str) -> dict[str, str]:
    """The uncommented `key=value` lines of a neo4j.conf."""
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


# 1-4: check, converge, idempotence


def test_check_mode_on_a_clean_host_changes_nothing(converged: Converged) -> None:
    """`--check --diff` on a clean host runs through, predicts changes and makes none."""
    _succeeded(converged.check)
    assert converged.check.host().changed > 0
    assert converged.after_check == converged.clean


def test_first_apply_converges(converged: Converged) -> None:
    """The first apply runs every role without a failure and changes the host."""
    _succeeded(converged.first)
    assert converged.first.host().changed > 0
    assert "Memory budget fits on localhost" in converged.first.text


def test_second_apply_reports_no_change(converged: Converged) -> None:
    """Applying the same inventory again changes nothing (`changed=0`)."""
    _succeeded(converged.second)
    assert converged.second.host().changed == 0, converged.second.output[-6000:]


def test_check_mode_on_a_converged_host_predicts_no_change(converged: Converged) -> None:
    """`--check` on a converged host predicts no change, the pip install included."""
    _succeeded(converged.check_again)
    assert converged.check_again.host().changed == 0, converged.check_again.output[-6000:]


# 5: verify what is observable


def test_swap_file_is_active_at_its_size(converged: Converged, host: Any) -> None:
    """/proc/swaps lists the swap file at its size (less the one header page)."""
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    swap_type, size_kib = active_swaps()[str(SWAP_FILE)]
    assert swap_type == "file"
    assert size_kib == LOCAL["swap_file_size_mb"] * 1024 - page_kib
    swap_file = host.file(str(SWAP_FILE))
    assert (swap_file.user, swap_file.group, swap_file.mode) == ("root", "root", 0o600)


def test_swappiness_is_set_live_and_persistently(converged: Converged, host: Any) -> None:
    """vm.swappiness has the inventory's value now, and its sysctl.d file keeps it at boot."""
    assert host.sysctl("vm.swappiness") == LOCAL["swap_swappiness"]
    sysctl_file = host.file(str(SYSCTL_FILE))
    assert sysctl_file.mode == 0o644
    assert re.search(r"^vm\.swappiness = (\d+)$", sysctl_file.content_string, re.MULTILINE)[
        1
    ] == str(LOCAL["swap_swappiness"])


def test_fstab_enables_the_swap_file_at_boot(converged: Converged, host: Any) -> None:
    """/etc/fstab has exactly one line for the swap file."""
    lines = host.file("/etc/fstab").content_string.splitlines()
    assert lines.count(FSTAB_LINE) == 1
    assert sum(line.startswith(f"{SWAP_FILE} ") for line in lines) == 1


def test_ollama_dropin_holds_the_inventory_environment(converged: Converged, host: Any) -> None:
    """override.conf is a [Service] section with one Environment= line per ollama_env key."""
    dropin = host.file(str(OLLAMA_DROPIN))
    assert dropin.mode == 0o644
    text = dropin.content_string
    assert "\n[Service]\n" in text
    expected = {key: str(value) for key, value in LOCAL["ollama_env"].items()}
    assert _environment_lines(text) == expected


def test_neo4j_conf_holds_the_memory_settings(converged: Converged, host: Any) -> None:
    """neo4j.conf sets heap initial = max, the page cache and the transaction memory."""
    settings = _settings_lines(host.file(str(NEO4J_CONF)).content_string)
    assert settings == {
        "server.memory.heap.initial_size": LOCAL["neo4j_heap_size"],
        "server.memory.heap.max_size": LOCAL["neo4j_heap_size"],
        "server.memory.pagecache.size": LOCAL["neo4j_pagecache_size"],
        "dbms.memory.transaction.total.max": LOCAL["neo4j_transaction_total_max"],
        "server.default_listen_address": "127.0.0.1",
    }


def test_daemon_has_its_user_and_virtualenv(converged: Converged, host: Any) -> None:
    """A system user without a shell, and the ragvisor command in the virtualenv."""
    user = host.user(RAGVISOR_USER)
    assert user.exists
    assert user.uid < 1000
    assert user.shell == "/usr/sbin/nologin"
    command = host.file(str(RAGVISOR_VENV / "bin" / "ragvisor"))
    assert command.is_file
    assert command.mode & 0o111


def test_daemon_configuration_is_valid_and_private(converged: Converged, host: Any) -> None:
    """ragvisor.toml is readable by the daemon's group only and the daemon's parser accepts it
    with the inventory's values.
    """
    config = host.file(str(RAGVISOR_CONFIG))
    assert (config.user, config.group, config.mode) == ("root", RAGVISOR_USER, 0o640)
    settings = parse_settings(read_toml(RAGVISOR_CONFIG))
    assert settings.generator.keep_alive == LOCAL["ragvisor_generator_keep_alive"]
    assert settings.generator.backend == "ollama"
    assert settings.store.data_dir == TEST_ROOT / "data"
    assert settings.corpus.paths == (TEST_ROOT / "corpus",)
    # [doctor]: what the other roles deployed, for `ragvisor doctor` to compare with.
    assert settings.doctor.expected_swap_mb == LOCAL["swap_file_size_mb"]
    assert settings.doctor.max_swappiness == LOCAL["swap_swappiness"]
    assert settings.doctor.neo4j_conf_path == NEO4J_CONF
    assert settings.doctor.neo4j_budget_mb == 512 + 256
    assert settings.doctor.ollama_dropin_path == OLLAMA_DROPIN


def test_doctor_finds_the_host_as_deployed(converged: Converged) -> None:
    """`ragvisor doctor` with the rendered configuration finds the swap, the swappiness, Neo4j's
    memory and Ollama's drop-in on the converged host as the roles deployed them.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAGVISOR_")}
    done = subprocess.run(
        [str(BIN / "ragvisor"), "doctor", "--config", str(RAGVISOR_CONFIG), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    report = json.loads(done.stdout)
    severities = {finding["check"]: finding["severity"] for finding in report["findings"]}
    for check in (
        "swap",
        "swappiness",
        "neo4j.heap",
        "neo4j.memory",
        "ollama.variables",
        "ollama.max_loaded_models",
        "ollama.num_parallel",
        "ollama.keep_alive",
        "ollama.context_length",
    ):
        assert severities.get(check) == "ok", (check, report)
    assert "critical" not in severities.values(), report
    assert done.returncode == 0, report


def test_unit_is_type_notify_with_watchdog_and_limits(converged: Converged) -> None:
    """ragvisor.service waits for READY=1, restarts on watchdog or failure, and is bounded."""
    defaults = role_defaults("ragvisor")
    service = _unit(RAGVISOR_UNIT)["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == f"{defaults['ragvisor_watchdog_s']}s"
    assert service["Restart"] == "on-failure"
    assert service["MemoryHigh"] == defaults["ragvisor_memory_high"]
    assert service["MemoryMax"] == defaults["ragvisor_memory_max"]
    # The data directory is outside /var/lib: written through ReadWritePaths= only, no
    # StateDirectory= (which would make systemd create /var/lib/ragvisor instead).
    assert "StateDirectory" not in service
    assert service["ReadWritePaths"] == str(local_path("ragvisor_data_dir"))
    assert service["ExecStart"] == f"{RAGVISOR_VENV}/bin/ragvisor serve --config {RAGVISOR_CONFIG}"
    assert service["MemoryDenyWriteExecute"] == "yes"
    assert service["TimeoutStopSec"] == f"{defaults['ragvisor_stop_timeout_s']}s"


def test_unit_passes_systemd_analyze_verify(converged: Converged) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning."""
    done = subprocess.run(
        ["systemd-analyze", "verify", str(RAGVISOR_UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_unit_exposure_is_at_most_2_5(converged: Converged) -> None:
    """`systemd-analyze security --offline=yes` scores the hardened unit at 2.5 or below."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(RAGVISOR_UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for ragvisor\.service: ([\d.]+)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    assert float(match[1]) <= 2.5, done.stdout


def test_swap_file_is_resized_when_its_size_changes(
    converged: Converged, ansible_env: dict[str, str]
) -> None:
    """A new swap_file_size_mb turns the file off, recreates it and turns it on at the new
    size; the inventory's size afterwards resizes it back, and the next run changes nothing.
    """
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    size_mb = LOCAL["swap_file_size_mb"]
    grown = run_playbook(
        "swap.yml",
        inventory="local",
        env=ansible_env,
        extra_vars={"swap_file_size_mb": size_mb + 16},
    )
    _succeeded(grown)
    assert active_swaps()[str(SWAP_FILE)] == ("file", (size_mb + 16) * 1024 - page_kib)
    back = run_playbook("swap.yml", inventory="local", env=ansible_env)
    _succeeded(back)
    assert active_swaps()[str(SWAP_FILE)] == ("file", size_mb * 1024 - page_kib)
    again = run_playbook("swap.yml", inventory="local", env=ansible_env)
    _succeeded(again)
    assert again.host().changed == 0
    assert Path("/etc/fstab").read_text(encoding="utf-8").splitlines().count(FSTAB_LINE) == 1


def _vaulted_vars(
    folder: Path, ansible_env: dict[str, str], values: dict[str, Any]
) -> tuple[str, ...]:
    """`values` in a vars file encrypted with ansible-vault, as an operator keeps the Neo4j
    password; returns the options that hand it to ansible-playbook."""
    vault_password = folder / "vault-password"
    vault_password.write_text(secrets.token_urlsafe(16) + "\n", encoding="utf-8")
    vars_file = folder / "vault.yml"
    vars_file.write_text(json.dumps(values), encoding="utf-8")
    subprocess.run(
        [
            str(BIN / "ansible-vault"),
            "encrypt",
            "--vault-password-file",
            str(vault_password),
            str(vars_file),
        ],
        env=ansible_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "$ANSIBLE_VAULT" in vars_file.read_text(encoding="utf-8")
    return ("--vault-password-file", str(vault_password), "-e", f"@{vars_file}")


def test_neo4j_store_gets_its_config_and_a_private_password_file(
    converged: Converged, ansible_env: dict[str, str], neo4j_engine: Any, tmp_path: Path, host: Any
) -> None:
    """With ragvisor_store_backend neo4j and a vaulted password the role writes a [store] table
    the daemon's parser accepts and a 0600 password file of the daemon's user with which the
    doctor reaches the real Neo4j; no --check --diff, apply or re-apply output holds the password;
    back on sqlite the file is gone.
    """
    password = neo4j_engine.password
    store_vars = {"ragvisor_store_backend": "neo4j", "ragvisor_neo4j_uri": neo4j_engine.uri}
    vault = _vaulted_vars(tmp_path, ansible_env, {"ragvisor_neo4j_password": password})
    runs = [
        run_playbook(
            "ragvisor.yml",
            inventory="local",
            env=ansible_env,
            extra_vars=store_vars,
            check=check,
            options=vault,
        )
        for check in (True, False, False)
    ]
    for run in runs:
        _succeeded(run)
        assert password not in run.output
    predicted, applied, again = runs
    assert predicted.host().changed > 0
    assert applied.host().changed > 0
    assert again.host().changed == 0, again.output[-6000:]

    password_file = host.file(str(NEO4J_PASSWORD_FILE))
    assert (password_file.user, password_file.group, password_file.mode) == (
        RAGVISOR_USER,
        RAGVISOR_USER,
        0o600,
    )
    assert password_file.content_string == password + "\n"
    assert password not in RAGVISOR_CONFIG.read_text(encoding="utf-8")
    settings = parse_settings(read_toml(RAGVISOR_CONFIG))
    store = settings.store
    assert (store.backend, store.uri, store.user, store.database) == (
        "neo4j",
        neo4j_engine.uri,
        "neo4j",
        "neo4j",
    )
    assert store.password_file == NEO4J_PASSWORD_FILE
    reached = {f.check: f for f in diagnose(read_host(settings, build_store), settings)}
    assert reached["store.neo4j"].severity == Severity.OK, reached["store.neo4j"]

    back = run_playbook("ragvisor.yml", inventory="local", env=ansible_env)
    _succeeded(back)
    assert not NEO4J_PASSWORD_FILE.exists()
    assert parse_settings(read_toml(RAGVISOR_CONFIG)).store.backend == "sqlite"


# 6-7: remove, verify the host is as it was


def test_absent_restores_the_host(converged: Converged, removed: Removed) -> None:
    """Every state set to absent leaves the host exactly as it was before the first run."""
    _succeeded(removed.first)
    assert removed.first.host().changed > 0
    assert removed.state == converged.clean


def test_absent_twice_changes_nothing(removed: Removed) -> None:
    """Removing what is already gone reports `changed=0`."""
    _succeeded(removed.second)
    assert removed.second.host().changed == 0, removed.second.output[-6000:]


def test_absent_verified_with_testinfra(converged: Converged, removed: Removed, host: Any) -> None:
    """No swap file, no fstab line or sysctl file, swappiness back, no drop-in, no neo4j.conf
    block, no user, unit, configuration or virtualenv.
    """
    assert str(SWAP_FILE) not in active_swaps()
    assert not host.file(str(SWAP_FILE)).exists
    assert FSTAB_LINE not in host.file("/etc/fstab").content_string
    assert not host.file(str(SYSCTL_FILE)).exists
    assert str(host.sysctl("vm.swappiness")) == converged.clean["vm.swappiness"]
    assert not host.file(str(OLLAMA_DROPIN)).exists
    assert not host.file(str(NEO4J_CONF)).exists
    assert not host.user(RAGVISOR_USER).exists
    for path in (RAGVISOR_UNIT, RAGVISOR_CONFIG, RAGVISOR_VENV):
        assert not host.file(str(path)).exists
