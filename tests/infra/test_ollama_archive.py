"""The Ollama release archive we make, and what the `ollama` role does with one before any host.

- `ollama_archive.build()` lays the source-built binary out as Ollama's release does (`bin/ollama`,
  `lib/ollama/`, owned by 0:0) with a `sha256sum.txt` in the release's format.
- The role picks the asset's extension by version (`.tgz` up to 0.13, `.tar.zst` from 0.14) and
  refuses, at role entry, an install whose checksum is not pinned.
- The role's unit, rendered with its defaults, passes `systemd-analyze verify` silently and
  `systemd-analyze security --offline=yes` rates its exposure at 5 or below (the figure printed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from ragvisor.core.hashing import file_sha256
from tests.infra import ollama_archive, ollama_engine
from tests.infra.nspawn import REPO, PlaybookRun, ansible_playbook
from tests.infra.playbook import run_playbook
from tests.infra.unit_analysis import offline_exposure, verify_silently

ROLE = REPO / "roles/ollama"
MAX_EXPOSURE = 5.0
SYSTEMD_UNIT_DIR = Path("/usr/lib/systemd/system")


def test_asset_name_follows_the_release() -> None:
    """`.tgz` up to 0.13, `.tar.zst` from 0.14 on (release candidates of 0.14 included)."""
    assert ollama_archive.asset_name("0.13.5") == "ollama-linux-amd64.tgz"
    assert ollama_archive.asset_name("0.14.0") == "ollama-linux-amd64.tar.zst"
    assert ollama_archive.asset_name("v0.14.0-rc1", "arm64") == "ollama-linux-arm64.tar.zst"
    assert ollama_archive.asset_name("0.17.4") == "ollama-linux-amd64.tar.zst"


def test_release_version_refuses_what_is_not_one() -> None:
    """A text that does not start with a dotted number is not taken for a version."""
    with pytest.raises(ValueError, match="not an Ollama version"):
        ollama_archive.release_version("latest")


@pytest.fixture(scope="module")
def archive() -> ollama_archive.ReleaseArchive:
    """The release archive of the source-built Ollama (built with it on first use)."""
    if missing := ollama_engine.missing_tools():
        pytest.skip(f"no Ollama on this machine: {', '.join(missing)} not found on PATH")
    return ollama_archive.build()


@pytest.mark.slow
def test_archive_has_the_release_layout(
    archive: ollama_archive.ReleaseArchive, tmp_path: Path
) -> None:
    """`bin/ollama` (the binary we built, executable) and `lib/ollama/`, owned by 0:0, in a zstd
    stream; `sha256sum.txt` lists `./<asset>` with the archive's real digest."""
    assert archive.path.name == "ollama-linux-amd64.tar.zst"
    plain = tmp_path / "ollama.tar"
    subprocess.run(["zstd", "-q", "-d", str(archive.path), "-o", str(plain)], check=True)
    with tarfile.open(plain) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert sorted(members) == ["bin/ollama", "lib/ollama"]
        assert members["lib/ollama"].isdir()
        assert all(member.uid == 0 and member.gid == 0 for member in members.values())
        assert members["bin/ollama"].mode & 0o111 == 0o111
        tar.extractall(tmp_path / "tree", filter="data")
    assert file_sha256(tmp_path / "tree/bin/ollama") == file_sha256(ollama_engine.binary())
    assert archive.sha256 == file_sha256(archive.path)
    listed = archive.sha256sum_file.read_text()
    assert listed == f"{archive.sha256}  ./ollama-linux-amd64.tar.zst\n"
    assert ollama_archive.build() == archive, "a second build reuses the cached archive"


def test_role_vars_pin_the_archive(tmp_path: Path) -> None:
    """The role variables of an archive carry its version, its pinned digest and one source."""
    archive = ollama_archive.ReleaseArchive("0.17.4", tmp_path / "a.tar.zst", "ab" * 32)
    assert archive.role_vars() == {
        "ollama_version": "0.17.4",
        "ollama_archive_checksum": f"sha256:{'ab' * 32}",
        "ollama_archive_src": str(tmp_path / "a.tar.zst"),
    }
    assert archive.role_vars(url="file:///x.tar.zst")["ollama_archive_url"] == "file:///x.tar.zst"
    assert "ollama_archive_src" not in archive.role_vars(url="file:///x.tar.zst")


# --- the role's variables and unit, rendered without a host ----------------------------------


def _render(work: Path, tasks: list[dict[str, object]], extra: dict[str, object]) -> PlaybookRun:
    """Run `tasks` on localhost with the role's defaults and vars loaded, plus `extra`."""
    playbook = [
        {
            "name": "Render with the ollama role's defaults",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": True,
            "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
            "tasks": tasks,
        }
    ]
    path = work / "render.yml"
    path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    extra_vars = ("-e", json.dumps(extra))  # above vars_files, as an inventory's would be
    run = ansible_playbook(path, Path("localhost,"), work / "state", *extra_vars, timeout_s=180)
    assert run.returncode == 0, run.output
    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    ("version", "asset"),
    [("0.13.5", "ollama-linux-amd64.tgz"), ("0.14.0", "ollama-linux-amd64.tar.zst")],
)
def test_role_picks_the_asset_by_version(version: str, asset: str, tmp_path: Path) -> None:
    """The default `ollama_archive_url` names the asset the release of `ollama_version` has."""
    out = tmp_path / "url.json"
    task: dict[str, object] = {
        "name": "Write the URL",
        "ansible.builtin.copy": {
            "content": "{{ {'url': ollama_archive_url, 'ext': __ollama_archive_ext} | to_json }}",
            "dest": str(out),
            "mode": "0644",
        },
    }
    _render(tmp_path, [task], {"ollama_version": version, "ollama_arch": "amd64"})
    rendered = json.loads(out.read_text())
    assert rendered["url"] == (
        f"https://github.com/ollama/ollama/releases/download/v{version}/{asset}"
    )
    assert asset.endswith(rendered["ext"])


@pytest.mark.slow
def test_install_without_a_pinned_checksum_is_refused(ansible_env: dict[str, str]) -> None:
    """With `ollama_install` and no `ollama_archive_checksum` the role stops at entry, saying
    where the digest comes from, before any task touches the host."""
    run = run_playbook(
        "ollama.yml",
        inventory="local",
        env=ansible_env,
        extra_vars={"ollama_install": True},
        check=True,
        timeout_s=180,
    )
    assert run.returncode != 0
    assert "ollama_archive_checksum must pin the digest" in run.text
    assert "TASK [ollama : Create the ollama group]" not in run.output


@pytest.fixture(scope="module")
def unit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ollama.service` as the role writes it with its defaults (and a pinned checksum)."""
    work = tmp_path_factory.mktemp("ollama-unit")
    rendered = work / "ollama.service"
    task: dict[str, object] = {
        "name": "Render the unit",
        "ansible.builtin.template": {
            "src": str(ROLE / "templates/ollama.service.j2"),
            "dest": str(rendered),
            "mode": "0644",
        },
    }
    _render(work, [task], {"ollama_archive_checksum": f"sha256:{'0' * 64}"})
    return rendered


@pytest.mark.slow
def test_unit_verifies_silently(unit_file: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing, not even a warning: systemd ignores a hardening
    line it does not understand, and says so only there."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEMD_UNIT_DIR, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/ollama.service").write_text(unit_file.read_text())
    placeholder = root / "usr/local/bin/ollama"
    placeholder.parent.mkdir(parents=True)
    placeholder.write_text("#!/bin/sh\nexit 0\n")
    placeholder.chmod(0o755)
    verify_silently(root, "ollama.service")


@pytest.mark.slow
def test_unit_exposure_is_at_most_five(unit_file: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the sandbox: 0 (tight) to 10 (open)."""
    exposure, report = offline_exposure(unit_file)
    print(f"ollama.service exposure (offline): {exposure}")
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{report}"
