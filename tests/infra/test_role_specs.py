"""The roles' contracts: what the argument specs refuse at role entry, that each spec agrees with
the role's defaults and README, that the preflight's fallbacks are the roles' own defaults, and
that `ansible-lint --offline` is clean.
"""

from __future__ import annotations

import ast
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.infra.localhost import role_defaults
from tests.infra.playbook import ANSIBLE_LINT, REPO, PlaybookRun, run_playbook
from tests.infra.role_docs import expected_readme, load_options, role_dirs

SERVICE_ROLES = ("swap", "neo4j", "ollama", "ragvisor")


def _check_run(
    env: dict[str, str], playbook: str, overrides: dict[str, Any], *options: str
) -> PlaybookRun:
    """A --check run of inventory/local: nothing on the host can change."""
    return run_playbook(
        playbook,
        inventory="local",
        env=env,
        extra_vars=overrides,
        check=True,
        options=options,
        timeout_s=180,
    )


# What the specs and the roles' checks refuse


@pytest.mark.slow
def test_unknown_ollama_variable_is_refused_at_role_entry(ansible_env: dict[str, str]) -> None:
    """OLLAMA_NUM_THREADS, which Ollama does not read, fails the ollama role before any task,
    and the error names it.
    """
    env_with_typo = {**role_defaults("ollama")["ollama_env"], "OLLAMA_NUM_THREADS": 4}
    run = _check_run(ansible_env, "ollama.yml", {"ollama_env": env_with_typo})
    assert run.returncode != 0
    assert run.host().failed == 1
    assert "ollama_env.OLLAMA_NUM_THREADS. Supported parameters include" in run.text
    assert "TASK [ollama : Write the drop-in" not in run.output


@pytest.mark.slow
def test_wrongly_typed_value_is_refused_at_role_entry(ansible_env: dict[str, str]) -> None:
    """A swappiness that is not a number is refused by the swap role's spec, naming it."""
    run = _check_run(ansible_env, "swap.yml", {"swap_swappiness": "lots"})
    assert run.returncode != 0
    assert "swap_swappiness" in run.text
    assert "TASK [swap : Allocate the swap file]" not in run.output


@pytest.mark.slow
def test_size_without_a_unit_is_refused(ansible_env: dict[str, str]) -> None:
    """A heap of "512" (bytes? MB?) is refused by the neo4j role with the rule to follow."""
    run = _check_run(
        ansible_env, "neo4j.yml", {"neo4j_heap_size": "512"}, "--skip-tags", "preflight"
    )
    assert run.returncode != 0
    assert "neo4j: sizes need a unit (k, m or g)" in run.text
    assert "neo4j_heap_size=512," in run.text


@pytest.mark.slow
def test_keep_alive_that_ollama_cannot_parse_is_refused(ansible_env: dict[str, str]) -> None:
    """OLLAMA_KEEP_ALIVE "5 minutes" is not a Go duration: refused, with the accepted forms."""
    env = {**role_defaults("ollama")["ollama_env"], "OLLAMA_KEEP_ALIVE": "5 minutes"}
    run = _check_run(ansible_env, "ollama.yml", {"ollama_env": env})
    assert run.returncode != 0
    assert "OLLAMA_KEEP_ALIVE=5 minutes is not a duration Ollama understands" in run.text


# Specs, defaults and READMEs agree


def _normalized(value: Any) -> Any:
    """Folded YAML strings and quoted ones compare equal when their words are."""
    return " ".join(value.split()) if isinstance(value, str) else value


@pytest.mark.parametrize("role_dir", role_dirs(), ids=lambda path: path.name)
def test_spec_defaults_are_the_defaults_files(role_dir: Any) -> None:
    """Every variable of defaults/main.yml is in the spec with the same default, and every
    spec option with a default is in defaults/main.yml.
    """
    options = load_options(role_dir)
    defaults = yaml.safe_load((role_dir / "defaults" / "main.yml").read_text(encoding="utf-8"))
    assert set(defaults) == {name for name, option in options.items() if "default" in option}
    for name, value in defaults.items():
        assert _normalized(options[name]["default"]) == _normalized(value), name


@pytest.mark.parametrize("role_dir", role_dirs(), ids=lambda path: path.name)
def test_public_variables_carry_their_role_name(role_dir: Any) -> None:
    """Every variable a role takes starts with the role's name."""
    assert all(name.startswith(f"{role_dir.name}_") for name in load_options(role_dir))


@pytest.mark.parametrize("role_dir", role_dirs(), ids=lambda path: path.name)
def test_readme_variable_table_is_current(role_dir: Any) -> None:
    """The README's table is what `python -m tests.infra.role_docs` generates from the spec."""
    current, expected = expected_readme(role_dir)
    assert current == expected, f"run: .venv/bin/python -m tests.infra.role_docs ({role_dir.name})"


@pytest.mark.parametrize("role_dir", role_dirs(), ids=lambda path: path.name)
def test_role_has_the_standard_layout(role_dir: Any) -> None:
    """defaults, tasks, meta (spec and galaxy info) and a README; handlers and templates for
    the roles that manage a service.
    """
    files = ["defaults/main.yml", "tasks/main.yml", "meta/main.yml", "meta/argument_specs.yml"]
    if role_dir.name in SERVICE_ROLES:
        files.append("handlers/main.yml")
        assert any((role_dir / "templates").glob("*.j2"))
    for name in [*files, "README.md"]:
        assert (role_dir / name).is_file(), name


def test_preflight_fallbacks_are_the_roles_defaults() -> None:
    """Where the preflight (or the daemon's [doctor] table) reads another role's variable with
    `| default(...)`, the fallback is that role's own default: run alone, they count what the
    role would apply.
    """
    text = "\n".join(
        (REPO / "roles" / path).read_text(encoding="utf-8")
        for path in ("preflight/defaults/main.yml", "ragvisor/vars/main.yml")
    )
    fallbacks = re.findall(r"\b([a-z0-9]+_[a-z0-9_]+) \| default\(('[^']*'|\d+|\{[^}]*\})\)", text)
    assert len(fallbacks) >= 14, fallbacks
    for name, literal in fallbacks:
        fallback = ast.literal_eval(literal)
        actual = role_defaults(name.split("_", 1)[0])[name]
        if isinstance(fallback, dict):
            assert {key: actual[key] for key in fallback} == fallback, name
        else:
            assert fallback == actual, name


# Lint


@pytest.mark.slow
def test_ansible_lint_is_clean(ansible_env: dict[str, str]) -> None:
    """`ansible-lint --offline` passes its production profile on roles, playbooks, inventories."""
    done = subprocess.run(
        [str(ANSIBLE_LINT), "--offline", "--nocolor"],
        cwd=REPO,
        env=ansible_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr
