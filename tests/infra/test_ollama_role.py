"""The `ollama` role's own install path on a real systemd, fed the way an air-gapped host is.

A container booted with systemd-nspawn (`tests/infra/nspawn.py`; no network) gets
`playbooks/ollama.yml` over SSH with:

- the release archive `tests/infra/ollama_archive.py` makes from the Ollama we build from source,
  copied from the control machine (`ollama_archive_src`) and checked against its pinned digest;
- `gemma3-270m` from the pinned Gemma GGUF, bind-mounted into the container (`remote_src`), and
  `all-minilm` from the MiniLM GGUF on the control machine (copied over): `ollama_local_models`;
- `zstd` (the archive is a `.tar.zst`) installed by the role's apt task from a local apt
  repository — the container's only package source, as on an air-gapped host with a mirror.
  It holds the few Debian packages the role installs (`zstd`, and `python3-apt`, which the apt
  module installs for itself) with what they need beyond the rootfs, fetched once from the
  host's own Debian mirror (`tests/infra/apt_mirror.py`). The bare-host test (with Debian's
  mirror reachable) covers the same task online.
- two older releases and a stray archive under `/opt/ollama`, as earlier versions leave them.

Then, in order: a dry run (`--check --diff`) on the fresh container changes nothing; the first
apply converges; `ollama list` shows both models; gemma3-270m answers a chat and all-minilm
embeds; the service runs sandboxed and `systemd-analyze security ollama.service` is printed
(target: 5 or below); old releases beyond `ollama_keep_versions` and every archive are gone; the
second apply reports `changed=0`; a GGUF or archive that does not match its pin is refused;
another archive of the same version, fetched from a `file://` URL, is unpacked afresh; and
`ollama_state: absent` removes everything, twice without a change the second time.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra import ollama_archive, ollama_engine
from tests.infra.apt_mirror import build_apt_mirror, mirror_bind, use_in
from tests.infra.engine_steps import EngineError
from tests.infra.nspawn import (
    REPO,
    Bind,
    Container,
    PlaybookRun,
    ansible_playbook,
    build_rootfs,
    require_root,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

HOST = "nspawn"
GGUF_MOUNT = "/opt/ragvisor-gguf"
RELEASE_MOUNT = "/opt/ragvisor-release"
# What the role's apt task installs, and what the apt module installs for itself first
# (their dependencies come along: apt_mirror resolves them against the rootfs).
APT_PACKAGES = ("zstd", "python3-apt")
MAX_EXPOSURE = 5.0
INSTALL_DIR = "/opt/ollama"
OLD_RELEASES = {"0.15.0": "2026-01-01", "0.16.0": "2026-06-01"}
STRAY_ARCHIVE = f"{INSTALL_DIR}/ollama-0.16.0-linux-amd64.tar.zst"
OLLAMA_ENV: dict[str, Any] = {
    "OLLAMA_HOST": "127.0.0.1:11434",
    "OLLAMA_KEEP_ALIVE": "0",
    "OLLAMA_MAX_LOADED_MODELS": 1,
    "OLLAMA_NUM_PARALLEL": 1,
    "OLLAMA_CONTEXT_LENGTH": 2048,
}
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def repack(archive: Path, dest: Path) -> str:
    """`archive` recompressed at another zstd level into `dest`; returns its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["sh", "-c", 'zstd -q -d -c "$0" | zstd -q -9 -c > "$1"', str(archive), str(dest)],
        check=True,
        timeout=300,
    )
    return hashlib.sha256(dest.read_bytes()).hexdigest()


@dataclass
class Rig:
    """The booted container, its inventory, and the bundle it is given."""

    container: Container
    inventory: Path
    state_dir: Path
    archive: ollama_archive.ReleaseArchive
    models: list[ollama_archive.LocalModel]
    # The same binary packed again (another zstd level: other bytes, another digest), where the
    # host sees it at RELEASE_MOUNT.
    rebuilt_sha256: str

    def apply(self, *args: str, **overrides: Any) -> PlaybookRun:
        """`ansible-playbook playbooks/ollama.yml` over SSH; `overrides` as extra variables."""
        extra = ["-e", json.dumps(overrides)] if overrides else []
        return ansible_playbook(
            REPO / "playbooks/ollama.yml", self.inventory, self.state_dir, "--diff", *args, *extra
        )

    def api(self, path: str, body: dict[str, Any] | None = None, timeout_s: float = 120) -> Any:
        """Ollama's API inside the container (its loopback), as JSON."""
        script = (
            "import json, sys, urllib.request\n"
            "body = sys.stdin.read().encode() or None\n"
            f"request = urllib.request.Request('http://127.0.0.1:11434{path}', data=body)\n"
            f"print(urllib.request.urlopen(request, timeout={timeout_s}).read().decode())\n"
        )
        text = json.dumps(body) if body is not None else ""
        done = self.container.run(
            "python3", "-c", script, input_text=text, timeout_s=timeout_s + 10
        )
        return json.loads(done.stdout)


def host_vars(
    archive: ollama_archive.ReleaseArchive, models: list[ollama_archive.LocalModel]
) -> dict[str, Any]:
    """The host's variables: the archive from the control machine, gemma from the bind mount,
    all-minilm copied over, and a preflight that fits (Ollama's models only)."""
    entries = []
    for model in models:
        if model.name == ollama_engine.CHAT_MODEL:
            entries.append(
                model.role_entry(gguf=f"{GGUF_MOUNT}/{model.gguf.name}", remote_src=True)
            )
        else:
            entries.append(model.role_entry())
    return {
        "preflight_chat_model_mb": 1800,
        "preflight_embed_model_mb": 0,
        "ollama_state": "present",
        "ollama_install": True,
        **archive.role_vars(),
        "ollama_keep_versions": 2,
        "ollama_env": OLLAMA_ENV,
        "ollama_models": [],
        "ollama_local_models": entries,
    }


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A booted container with the apt repository and the Gemma GGUF bound read-only, apt
    pointed at the repository only, and leftovers of older releases; stopped afterwards."""
    if missing := ollama_engine.missing_tools():
        pytest.skip(f"no Ollama on this machine: {', '.join(missing)} not found on PATH")
    try:
        archive = ollama_archive.build()
        models = ollama_archive.local_models()
    except EngineError as exc:
        pytest.fail(f"building the Ollama bundle failed: {exc}")
    session = tmp_path_factory.mktemp("ollama-role")
    rootfs = build_rootfs()
    mirror = build_apt_mirror(rootfs, APT_PACKAGES)
    gemma = next(model for model in models if model.name == ollama_engine.CHAT_MODEL)
    rebuilt_sha256 = repack(archive.path, session / "release" / archive.path.name)
    binds = (
        mirror_bind(mirror),
        Bind(gemma.gguf.parent, GGUF_MOUNT),
        Bind(session / "release", RELEASE_MOUNT),
    )
    container = Container.boot(rootfs, session / "machine", binds=binds)
    try:
        use_in(container)
        for version, day in OLD_RELEASES.items():
            container.run("mkdir", "-p", f"{INSTALL_DIR}/{version}/bin")
            container.run("touch", "-d", day, f"{INSTALL_DIR}/{version}")
        container.write_file(STRAY_ARCHIVE, "an archive an earlier run left behind\n")
        inventory = container.write_inventory(
            session / "inventory.yml", host=HOST, host_vars=host_vars(archive, models)
        )
        yield Rig(container, inventory, session / "ansible", archive, models, rebuilt_sha256)
    finally:
        container.stop()


def _exists(rig: Rig, path: str) -> bool:
    return rig.container.run("test", "-e", path, check=False).returncode == 0


# --- the sequence ----------------------------------------------------------------------------


def test_dry_run_on_the_fresh_host_changes_nothing(rig: Rig) -> None:
    """`--check --diff` before anything is installed runs through, and the host is untouched."""
    run = rig.apply("--check")
    counts = run.counts(HOST)
    assert run.returncode == 0, run.output[-8000:]
    assert counts["failed"] == 0
    untouched = (
        f"{INSTALL_DIR}/{rig.archive.version}",
        "/usr/local/bin/ollama",
        "/etc/systemd/system/ollama.service",
        "/usr/share/ollama",
        "/usr/bin/zstd",
    )
    for path in untouched:
        assert not _exists(rig, path), f"the dry run created {path}"
    assert rig.container.run("id", "ollama", check=False).returncode != 0


def test_first_apply_converges(rig: Rig) -> None:
    """The first apply installs zstd, the release, the unit and both models, and succeeds."""
    run = rig.apply()
    counts = run.counts(HOST)
    assert run.returncode == 0, run.output[-10000:]
    assert counts["failed"] == 0
    assert counts["changed"] > 0
    state = rig.container.show("ollama", "ActiveState", "SubState", "User")
    assert (state["ActiveState"], state["SubState"], state["User"]) == (
        "active",
        "running",
        "ollama",
    ), rig.container.journal("ollama")


def test_ollama_lists_the_local_models(rig: Rig) -> None:
    """`ollama list` on the host shows both models created from the GGUF files."""
    listed = rig.container.run("ollama", "list").stdout
    for model in rig.models:
        assert f"{model.name}:latest" in listed, listed


def test_gemma_answers_and_minilm_embeds(rig: Rig) -> None:
    """A chat answer comes from gemma3-270m, and all-minilm returns a 384-dimensional vector."""
    answer = rig.api(
        "/api/chat",
        {
            "model": ollama_engine.CHAT_MODEL,
            "messages": [{"role": "user", "content": "Name one colour of the sky."}],
            "stream": False,
            "options": {"num_predict": 24, "num_ctx": 512, "temperature": 0},
        },
    )
    assert answer["message"]["content"].strip(), answer
    assert answer["eval_count"] > 0
    embedded = rig.api("/api/embed", {"model": ollama_engine.EMBED_MODEL, "input": "hello"})
    assert len(embedded["embeddings"][0]) == 384


def test_service_is_sandboxed(rig: Rig) -> None:
    """The unit's sandbox is in force and `systemd-analyze security` rates it 5 or below."""
    properties = ("ProtectSystem", "PrivateDevices", "NoNewPrivileges", "CapabilityBoundingSet")
    shown = rig.container.show("ollama", *properties, "ReadWritePaths")
    assert shown["ProtectSystem"] == "strict"
    assert shown["PrivateDevices"] == "yes"
    assert shown["NoNewPrivileges"] == "yes"
    assert shown["CapabilityBoundingSet"] == ""
    assert "/usr/share/ollama" in shown["ReadWritePaths"]
    done = rig.container.run(
        "systemd-analyze", "security", "--no-pager", "ollama.service", check=False
    )
    match = _EXPOSURE.search(done.stdout)
    assert match, done.stdout + done.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security ollama.service (in the container): {exposure}")
    assert exposure <= MAX_EXPOSURE, done.stdout


def test_old_releases_and_archives_are_pruned(rig: Rig) -> None:
    """The current release and the newest older one stay (ollama_keep_versions: 2); the oldest
    release, the stray archive and the one just unpacked are gone."""
    listed = rig.container.run("ls", "-A", INSTALL_DIR).stdout.split()
    assert sorted(listed) == sorted([rig.archive.version, "0.16.0", "modelfiles"]), listed
    link = rig.container.run("readlink", "/usr/local/bin/ollama").stdout.strip()
    assert link == f"{INSTALL_DIR}/{rig.archive.version}/bin/ollama"
    assert _exists(rig, f"{INSTALL_DIR}/{rig.archive.version}/lib/ollama")
    staged = rig.container.run("ls", "-A", f"{INSTALL_DIR}/modelfiles").stdout.split()
    assert sorted(staged) == ["all-minilm.Modelfile", "gemma3-270m.Modelfile"], staged


def test_second_apply_changes_nothing(rig: Rig) -> None:
    """The same playbook again: `changed=0`, and a dry run of it agrees."""
    for args in ((), ("--check",)):
        run = rig.apply(*args)
        assert run.returncode == 0, run.output[-8000:]
        assert run.counts(HOST)["changed"] == 0, run.changed_tasks()


def test_gguf_that_does_not_match_its_pin_is_refused(rig: Rig) -> None:
    """A GGUF whose sha256 is not the pinned one fails the run and never reaches Ollama."""
    minilm = next(m for m in rig.models if m.name == ollama_engine.EMBED_MODEL)
    wrong = {**minilm.role_entry(), "name": "wrong-pin", "sha256": "0" * 64}
    run = rig.apply(ollama_local_models=[wrong])
    assert run.returncode != 0
    assert "pins " + "0" * 64 + " for wrong-pin" in " ".join(run.output.split())
    assert "wrong-pin" not in rig.container.run("ollama", "list").stdout
    assert not _exists(rig, f"{INSTALL_DIR}/modelfiles/wrong-pin.gguf")


def test_archive_that_does_not_match_its_pin_is_refused(rig: Rig) -> None:
    """An archive whose digest is not the pinned one is never unpacked (a new version here, so
    the role has to fetch it), and the running release stays in place."""
    run = rig.apply(ollama_version="0.99.0", ollama_archive_checksum=f"sha256:{'0' * 64}")
    assert run.returncode != 0
    assert "ollama_archive_checksum pins sha256:" + "0" * 64 in " ".join(run.output.split())
    for path in (f"{INSTALL_DIR}/0.99.0", f"{INSTALL_DIR}/ollama-0.99.0-linux-amd64.tar.zst"):
        assert not _exists(rig, path), f"the refused archive left {path}"
    link = rig.container.run("readlink", "/usr/local/bin/ollama").stdout.strip()
    assert link == f"{INSTALL_DIR}/{rig.archive.version}/bin/ollama"


def test_another_archive_of_the_version_from_a_file_url_is_installed(rig: Rig) -> None:
    """A rebuilt archive of the same version, fetched by the host from a `file://` URL, is
    unpacked afresh (its digest names the marker), Ollama is restarted once onto it, the models
    stay, and the same variables again change nothing."""
    version_dir = f"{INSTALL_DIR}/{rig.archive.version}"
    before = rig.container.show("ollama", "MainPID")["MainPID"]
    source = {
        "ollama_archive_src": "",
        "ollama_archive_url": f"file://{RELEASE_MOUNT}/{rig.archive.path.name}",
        "ollama_archive_checksum": f"sha256:{rig.rebuilt_sha256}",
    }
    run = rig.apply(**source)
    assert run.returncode == 0, run.output[-8000:]
    assert run.counts(HOST)["changed"] > 0
    markers = rig.container.run("sh", "-c", f"ls -A {version_dir} | grep ragvisor-archive")
    assert markers.stdout.split() == [f".ragvisor-archive-{rig.rebuilt_sha256}"]
    assert rig.container.show("ollama", "ActiveState")["ActiveState"] == "active"
    assert rig.container.show("ollama", "MainPID")["MainPID"] != before
    assert run.output.count("RUNNING HANDLER [ollama : Restart ollama]") == 1
    listed = rig.container.run("ollama", "list").stdout
    assert all(f"{model.name}:latest" in listed for model in rig.models), listed
    assert not _exists(rig, f"{INSTALL_DIR}/ollama-{rig.archive.version}-linux-amd64.tar.zst")
    again = rig.apply(**source)
    assert again.returncode == 0, again.output[-8000:]
    assert again.counts(HOST)["changed"] == 0, again.changed_tasks()


def test_absent_removes_everything(rig: Rig) -> None:
    """`ollama_state: absent` stops Ollama and removes the unit, link, releases, models and
    user; a second absent run changes nothing."""
    run = rig.apply(ollama_state="absent")
    assert run.returncode == 0, run.output[-8000:]
    removed = (
        INSTALL_DIR,
        "/usr/local/bin/ollama",
        "/etc/systemd/system/ollama.service",
        "/etc/systemd/system/ollama.service.d",
        "/usr/share/ollama",
    )
    for path in removed:
        assert not _exists(rig, path), f"{path} is still there"
    assert rig.container.run("id", "ollama", check=False).returncode != 0
    survivors = rig.container.run("sh", "-c", "grep -lx ollama /proc/[0-9]*/comm", check=False)
    assert survivors.stdout == "", f"ollama processes outlived absent: {survivors.stdout}"
    again = rig.apply(ollama_state="absent")
    assert again.returncode == 0, again.output[-8000:]
    assert again.counts(HOST)["changed"] == 0, again.changed_tasks()
