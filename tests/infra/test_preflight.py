"""The memory-budget preflight: it refuses a configuration that does not fit, naming every term,
the total, the capacity and the shortfall, before any role touches the host; it accepts the prod
example on a 4 GB host.

The expected figures are computed here, independently of the role's Jinja, from the inventories
and the roles' defaults. A smaller host is simulated with `preflight_memtotal_mb`, the variable
that defaults to the gathered `ansible_memtotal_mb` (an extra var named like the fact would not
survive fact gathering).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.localhost import group_vars, host_state, role_defaults
from tests.infra.playbook import PlaybookRun, run_playbook

pytestmark = pytest.mark.slow

_UNIT_MIB = {"k": 1 / 1024, "m": 1, "g": 1024}


def _mib(size: str) -> int:
    """A Neo4j or systemd size ("512m", "1g", "512M") in MiB, rounded up."""
    return math.ceil(int(size[:-1]) * _UNIT_MIB[size[-1].lower()])


@dataclass(frozen=True)
class Budget:
    """The preflight's arithmetic, redone in Python."""

    terms: dict[str, int]
    capacity_mb: int

    @property
    def total_mb(self) -> int:
        return sum(self.terms.values())


def expected_budget(inventory: str, overrides: dict[str, Any], memtotal_mb: int) -> Budget:
    """What the preflight should count for `inventory` with `overrides` on a host of
    `memtotal_mb`: the inventory's values, else the roles' defaults.
    """
    layers = [overrides, group_vars(inventory)] + [
        role_defaults(role) for role in ("preflight", "swap", "neo4j", "ollama", "ragvisor")
    ]

    def value(name: str) -> Any:
        return next(layer[name] for layer in layers if name in layer)

    chat, embed = value("preflight_chat_model_mb"), value("preflight_embed_model_mb")
    together = value("ollama_env").get("OLLAMA_MAX_LOADED_MODELS", 0) != 1
    neo4j = value("neo4j_state") == "present"
    terms = {
        "chat model": chat,
        "embedding model": embed if together else max(0, embed - chat),
        "Neo4j heap": _mib(value("neo4j_heap_size")) if neo4j else 0,
        "Neo4j page cache": _mib(value("neo4j_pagecache_size")) if neo4j else 0,
        "Neo4j JVM overhead": value("preflight_neo4j_jvm_overhead_mb") if neo4j else 0,
        "Neo4j vector index": math.ceil(value("preflight_neo4j_vector_index_mb") / 4),
        "ragvisor daemon": _mib(value("ragvisor_memory_max")),
        "OS reserve": value("preflight_os_reserve_mb"),
    }
    swap_counted = value("preflight_count_swap") and value("swap_file_state") == "present"
    capacity = memtotal_mb + (value("swap_file_size_mb") if swap_counted else 0)
    return Budget(terms, capacity)


def _preflight(
    env: dict[str, str], inventory: str, overrides: dict[str, Any], playbook: str = "preflight.yml"
) -> PlaybookRun:
    # Only local carries ansible_connection; the example inventories' hosts are placeholders,
    # so they are evaluated on this machine.
    connection = None if inventory == "local" else "local"
    return run_playbook(
        playbook,
        inventory=inventory,
        env=env,
        extra_vars=overrides,
        connection=connection,
        timeout_s=180,
    )


def _assert_names_every_term(run: PlaybookRun, budget: Budget) -> None:
    for label, mb in budget.terms.items():
        assert f"{label} {mb} MB" in run.text, (label, run.text)
    assert f"= {budget.total_mb} MB" in run.text


OVERSIZED = {
    "preflight_chat_model_mb": 3000,
    "preflight_embed_model_mb": 400,
    "neo4j_heap_size": "1g",
    "preflight_memtotal_mb": 4096,
}


def test_refuses_an_oversized_configuration_naming_every_term(ansible_env: dict[str, str]) -> None:
    """A 3 GB chat model and a 1 GB heap on a 4 GB host: refused, with the arithmetic."""
    budget = expected_budget("local", OVERSIZED, memtotal_mb=4096)
    run = _preflight(ansible_env, "local", OVERSIZED)
    assert run.returncode != 0
    assert run.host().failed == 1
    assert "Memory budget refused on localhost" in run.text
    assert f"needs {budget.total_mb} MB but the host has {budget.capacity_mb} MB" in run.text
    assert f"short by {budget.total_mb - budget.capacity_mb} MB" in run.text
    _assert_names_every_term(run, budget)
    # OLLAMA_MAX_LOADED_MODELS=1 in inventory/local: the smaller model is not counted on top.
    assert "embedding model 0 MB (400 MB, loaded one at a time" in run.text


def test_site_refuses_before_touching_the_host(
    local_host: None, ansible_env: dict[str, str]
) -> None:
    """site.yml with the oversized configuration stops at the preflight: no role runs, the
    host is unchanged.
    """
    before = host_state()
    run = _preflight(ansible_env, "local", OVERSIZED, playbook="site.yml")
    assert run.returncode != 0
    assert run.host().failed == 1
    assert run.host().changed == 0
    assert "TASK [swap" not in run.output
    assert host_state() == before


def test_accepts_the_prod_example_on_a_4_gb_host(ansible_env: dict[str, str]) -> None:
    """inventory/prod fits a 4 GB host without counting its swap."""
    budget = expected_budget("prod", {}, memtotal_mb=4096)
    run = _preflight(ansible_env, "prod", {"preflight_memtotal_mb": 4096})
    assert run.returncode == 0, run.output[-4000:]
    assert f"needs {budget.total_mb} MB of 4096 MB" in run.text
    assert f"headroom {4096 - budget.total_mb} MB" in run.text
    assert "swap not counted" in run.text
    _assert_names_every_term(run, budget)


@pytest.mark.parametrize("memtotal_mb", [3900, 3891])
def test_accepts_the_prod_example_on_what_a_4_gb_droplet_reports(
    ansible_env: dict[str, str], memtotal_mb: int
) -> None:
    """A "4 GB" VM reports less MemTotal than 4096 MB (the firmware and the kernel keep some):
    3.8-3.9 GiB. inventory/prod fits there too, and the preflight prints its headroom."""
    budget = expected_budget("prod", {}, memtotal_mb=memtotal_mb)
    run = _preflight(ansible_env, "prod", {"preflight_memtotal_mb": memtotal_mb})
    assert run.returncode == 0, run.output[-4000:]
    headroom = memtotal_mb - budget.total_mb
    assert headroom >= 128, f"prod leaves only {headroom} MB on {memtotal_mb} MB"
    assert f"needs {budget.total_mb} MB of {memtotal_mb} MB" in run.text
    assert f"headroom {headroom} MB" in run.text
    print(f"prod preflight on MemTotal {memtotal_mb} MB: headroom {headroom} MB")


def test_refuses_the_prod_example_on_a_3_gb_host(ansible_env: dict[str, str]) -> None:
    """The same configuration on 3 GB is short, by the amount the arithmetic says."""
    budget = expected_budget("prod", {}, memtotal_mb=3072)
    run = _preflight(ansible_env, "prod", {"preflight_memtotal_mb": 3072})
    assert run.returncode != 0
    assert f"short by {budget.total_mb - 3072} MB" in run.text


def test_dev_counts_its_swap_and_prod_policy_does_not(ansible_env: dict[str, str]) -> None:
    """dev fits a host whose RAM alone is too small because its policy counts the swap file;
    with swap not counted the same host is refused.
    """
    memtotal = 3500
    counted = expected_budget("dev", {}, memtotal_mb=memtotal)
    assert counted.total_mb > memtotal  # the RAM alone is too small
    run = _preflight(ansible_env, "dev", {"preflight_memtotal_mb": memtotal})
    assert run.returncode == 0, run.output[-4000:]
    assert f"needs {counted.total_mb} MB of {counted.capacity_mb} MB" in run.text
    assert "MB swap (preflight_count_swap=true)" in run.text

    refused = _preflight(
        ansible_env, "dev", {"preflight_memtotal_mb": memtotal, "preflight_count_swap": False}
    )
    assert refused.returncode != 0
    assert f"short by {counted.total_mb - memtotal} MB" in refused.text


def test_capacity_defaults_to_the_gathered_memory_fact(ansible_env: dict[str, str]) -> None:
    """Without an override the preflight measures this machine's RAM (MemTotal, in MiB)."""
    meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
    memtotal_kib = int(
        next(line for line in meminfo.splitlines() if line.startswith("MemTotal:")).split()[1]
    )
    run = _preflight(ansible_env, "local", {})
    assert run.returncode == 0, run.output[-4000:]
    assert f"({memtotal_kib // 1024} MB RAM" in run.text
