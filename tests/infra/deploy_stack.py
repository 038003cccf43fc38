"""The end-to-end deploy's pieces (tests/infra/test_bare_host_deploy.py): prod's inventory laid
out for the bare host with the test's overrides, the Neo4j password vaulted as an operator keeps
it, `ansible-playbook playbooks/site.yml` runs timed per step (each output kept in the state
folder), and the host kernel's swap and `vm.swappiness` put back afterwards.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra import ollama_archive, ollama_engine
from tests.infra.bare_host import SWAP_MOUNT, WHEELHOUSE_MOUNT, BareHost, pip_role_vars
from tests.infra.nspawn import REPO, PlaybookRun, ansible_playbook, build_project_wheel

__all__ = [
    "APPLY_TIMEOUT_S",
    "DIST_DIR",
    "GGUF_MOUNT",
    "HOST",
    "MEMTOTAL_MB",
    "PROD_VARS",
    "SITE",
    "SWAP_FILE",
    "Deploy",
    "dist_folder",
    "host_overrides",
    "neo4j_ready",
    "restore_kernel",
    "vaulted_password_vars",
]

HOST = "bare"
PROD_VARS = REPO / "inventory" / "prod" / "group_vars" / "ragvisor.yml"
SITE = REPO / "playbooks" / "site.yml"
MEMTOTAL_MB = 3900
GGUF_MOUNT = "/opt/ragvisor-gguf"
# Where prod's ragvisor_pip_environment points pip (the dist folder the role copies over).
DIST_DIR = "/srv/ragvisor/dist"
SWAP_FILE = f"{SWAP_MOUNT}/swapfile"
# A first apply: apt (python3-venv, polkitd, zstd), pip of the whole daemon, two ollama creates.
APPLY_TIMEOUT_S = 1800.0


def neo4j_ready() -> str | None:
    """None when the Neo4j archive install path exists (the role's `neo4j_install_method:
    archive` and the test's archive builder); otherwise what is missing, for the printed reason."""
    missing = []
    if importlib.util.find_spec("tests.infra.neo4j_dist") is None:
        missing.append("tests/infra/neo4j_dist.py")
    defaults = (REPO / "roles/neo4j/defaults/main.yml").read_text()
    if "neo4j_install_method" not in defaults or "neo4j_archive_sha256" not in defaults:
        missing.append("an archive install path in roles/neo4j (neo4j_install_method: archive)")
    return "; ".join(missing) or None


def vaulted_password_vars(inventory_dir: Path, vault_password_file: Path) -> str:
    """A new Neo4j password, written vaulted into `host_vars/<HOST>.yml` as
    `vault_ragvisor_neo4j_password`, the variable prod's group_vars hands to both
    `neo4j_initial_password` and `ragvisor_neo4j_password` (docs/deploy.md), as an operator
    keeps it; returns the clear text, which no playbook output may show."""
    password = secrets.token_urlsafe(18)
    vault_password_file.write_text(secrets.token_urlsafe(24) + "\n")
    vault_password_file.chmod(0o600)
    binary = Path(sys.executable).with_name("ansible-vault")
    encrypted = subprocess.run(
        [
            str(binary if binary.exists() else "ansible-vault"),
            "encrypt_string",
            "--vault-password-file",
            str(vault_password_file),
        ],
        input=password,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    host_vars = inventory_dir / "host_vars"
    host_vars.mkdir(parents=True, exist_ok=True)
    (host_vars / f"{HOST}.yml").write_text(
        "---\n# Neo4j's password, in the vault; prod's group_vars pass it on.\n"
        + "vault_ragvisor_neo4j_password: "
        + encrypted.strip()
        + "\n"
    )
    return password


@dataclass
class Deploy:
    """The booted bare host, its inventory (prod's group_vars + the test's host variables),
    and the runs and timings the steps record."""

    host: BareHost
    inventory: Path
    state_dir: Path
    overrides: dict[str, Any]
    skip_tags: list[str]
    neo4j_missing: str | None
    # ansible-playbook's vault option, and the password it opens (never to be printed).
    vault_args: list[str] = field(default_factory=list)
    neo4j_password: str = ""
    runs: dict[str, PlaybookRun] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def apply(self, *args: str, step: str) -> PlaybookRun:
        """`ansible-playbook -i <inventory> playbooks/site.yml --diff`, timed as `step`."""
        skip = ["--skip-tags", ",".join(self.skip_tags)] if self.skip_tags else []
        started = time.monotonic()
        run = ansible_playbook(
            SITE,
            self.inventory,
            self.state_dir,
            "--diff",
            *self.vault_args,
            *skip,
            *args,
            timeout_s=APPLY_TIMEOUT_S,
        )
        self.record(step, time.monotonic() - started)
        self.runs[step] = run
        # Kept for reading after a pass too (each step's whole output).
        log_name = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-") + ".log"
        (self.state_dir / log_name).write_text(run.output)
        return run

    def record(self, step: str, seconds: float) -> None:
        self.timings_s[step] = seconds
        print(f"\n[bare-host deploy] {step}: {seconds:.1f} s")

    def exists(self, path: str) -> bool:
        return self.host.run("test", "-e", path, check=False).returncode == 0


def dist_folder(dest: Path) -> Path:
    """What docs/deploy.md's step 1 puts in dist/: the ragvisor wheel, the constraints and the
    model list (the llama.cpp wheel is left to the wheelhouse: the generator is Ollama)."""
    dest.mkdir(parents=True, exist_ok=True)
    build_project_wheel(dest)
    shutil.copy2(REPO / "requirements/constraints.txt", dest / "constraints.txt")
    shutil.copy2(REPO / "requirements/models.txt", dest / "models.txt")
    return dest


def host_overrides(
    archive: ollama_archive.ReleaseArchive,
    models: list[ollama_archive.LocalModel],
    dist: Path,
    swappiness_found: int,
    neo4j_archive: Path | None,
) -> dict[str, Any]:
    """The host variables laid over prod's group_vars, each for a reason this machine has."""
    entries = [
        model.role_entry(gguf=f"{GGUF_MOUNT}/{model.gguf.name}", remote_src=True)
        if model.name == ollama_engine.CHAT_MODEL
        else model.role_entry()  # copied from the control machine
        for model in models
    ]
    overrides: dict[str, Any] = {
        # Ollama: the role's download-verify-unpack path fed a local archive pinned by sha256;
        # the models from pinned GGUF files (no registry offline), gemma3-270m for llama3.2:1b.
        **archive.role_vars(),
        "ollama_models": [],
        "ollama_local_models": entries,
        "ragvisor_generator_model": ollama_engine.CHAT_MODEL,
        # The daemon: dist built from this checkout; pip offline (wheelhouse + dist).
        "ragvisor_dist_src": str(dist),
        **pip_role_vars(WHEELHOUSE_MOUNT, DIST_DIR),
        # Swap: a swap file cannot live on the container's tmpfs overlay.
        "swap_file_path": SWAP_FILE,
        "swap_swappiness_restore": swappiness_found,
    }
    if neo4j_archive is None:
        return {**overrides, "neo4j_state": "absent", "ragvisor_store_backend": "sqlite"}
    from tests.infra import neo4j_dist  # noqa: PLC0415 - only once it exists

    return {
        **overrides,
        # Neo4j: its archive (assembled from Maven Central) instead of its apt repository,
        # which this machine cannot reach. The password: vaulted in host_vars; the store
        # backend (neo4j) and the password's wiring are prod's own.
        "neo4j_install_method": "archive",
        "neo4j_archive_src": str(neo4j_archive),
        "neo4j_archive_sha256": neo4j_dist.sha256_of(neo4j_archive),
    }


def restore_kernel(rig: Deploy, session: Path, swappiness_found: int) -> None:
    """Swap off and `vm.swappiness` back, through the role's absent and, should that fail, from
    this machine's side (the swap file is the rig's disk-backed folder under `session`)."""
    started = time.monotonic()
    run = ansible_playbook(
        SITE,
        rig.inventory,
        rig.state_dir,
        *rig.vault_args,
        "--tags",
        "swap",
        "-e",
        "swap_file_state=absent",
        timeout_s=600,
    )
    rig.record("swap absent (restore this machine's kernel)", time.monotonic() - started)
    if run.returncode != 0:
        print(f"[bare-host deploy] swap absent failed:\n{run.output[-3000:]}")
    host_file = session / "host" / "swap" / "swapfile"
    active = Path("/proc/swaps").read_text()
    if str(host_file) in active or SWAP_FILE in active:
        subprocess.run(["swapoff", str(host_file)], check=False, timeout=120)
    if int(Path("/proc/sys/vm/swappiness").read_text()) != swappiness_found:
        Path("/proc/sys/vm/swappiness").write_text(f"{swappiness_found}\n")


# --- the steps ---------------------------------------------------------------------------------
