"""A bare host for tests: a container as empty as a new Debian 12 (or Ubuntu 24.04) droplet.

Why: the deploy rig's rootfs (tests/infra/nspawn.py) pre-installs what the roles need
(python3-venv, python3-packaging) and is reached as root, so it cannot show a role that forgets
an install or a task that only works as root. This host starts with what a cloud image has and
nothing the product installs; the playbook must bring the rest.

The image (tests/infra/bare_image.py): Debian 12 or Ubuntu 24.04 from `debootstrap
--variant=minbase`, what a cloud image has and nothing the product installs, a non-root admin
with passwordless sudo, apt's sources and no package lists; cached in `$RAGVISOR_CACHE/bare-host`.

The network — why a proxy and not NAT: the container boots with `--private-network`, so its
sshd, Neo4j's 7687, Ollama's 11434 and the daemon's port live on its own loopback and never
collide with the host's or another test's. For apt, `tests/infra/registry_proxy.py` (a host
process) opens a listening socket *inside* the container's network namespace on
127.0.0.1:`PROXY_PORT` and forwards to the distribution's registry hosts only; the image's
`/etc/apt/apt.conf.d/00ragvisor-test-proxy` points apt at it, as a host behind a corporate
proxy is configured. NAT (`--network-veth` plus masquerading) was the alternative: on this VM
`net.ipv4.ip_forward` is 0 and neither nft nor iptables is installed, so it would change
host-wide state (a sysctl, firewall rules, per-container subnets) that a killed test session
leaves behind and that parallel sessions must coordinate — the proxy needs none of it, and its
allowlist turns a download from anywhere but the registry into a clear 403. Package files pass
through a cache (`$RAGVISOR_CACHE/bare-host/packages`); indexes always come from the registry.

Python packages: PyPI is not on the container's path (no network except the registries), so
the daemon's wheels come from a bind-mounted wheelhouse (`build_wheelhouse()` of nspawn.py at
`WHEELHOUSE_MOUNT`) plus a dist folder the test binds. Nothing in the image points pip at them:
the role does, through its variables — `pip_role_vars()` returns `ragvisor_pip_environment`
(`PIP_NO_INDEX`, `PIP_FIND_LINKS`), what an operator of an offline host sets in the inventory.

MemTotal: `memtotal_mb=` mounts a /proc/meminfo over the container's own whose MemTotal is that
figure (MemFree/MemAvailable capped below it), so Ansible's `ansible_memtotal_mb` and the
daemon's psutil both see a "4 GB" droplet's 3,900 MB. It is a snapshot of the kernel's other
lines: `host.set_memtotal(mb)` takes a new one (after the swap role, for SwapTotal),
`host.set_memtotal(None)` shows the real file again.

Each boot is `--volatile=overlay` (writes land in a tmpfs; the cached image never changes), so
every boot starts bare. Boot to an SSH login as admin takes about a second or two.

Ubuntu 24.04 (`distro="ubuntu2404"`) is reachable and boots the same way; its Python is 3.12,
so the wheelhouse, built by the host's 3.11, does not fit it (the role's Python-tag check is
what must say so).

Use (the end-to-end deploy test):

    with bare_host(tmp_path, memtotal_mb=3900, binds=[wheelhouse_bind(build_wheelhouse()),
                   Bind(dist, "/opt/ragvisor-dist"), Bind(gguf_dir, "/opt/gguf")]) as host:
        inventory = host.inventory(tmp_path / "inv.yml",
                                   host_vars=pip_role_vars(WHEELHOUSE_MOUNT, "/opt/ragvisor-dist"))
        ansible_playbook(REPO / "playbooks/site.yml", inventory, state_dir, "--diff")  # nspawn.py
        host.ssh("sudo systemctl is-active ragvisor")        # as the admin, over SSH
        host.run("journalctl", "-u", "ragvisor")             # as root, through nsenter
        host.run_in_network("curl", "-s", "http://127.0.0.1:8321/healthz")  # the host's curl
        host.registry_requests()                             # what apt fetched

Swap and sysctl: by default, as in any nspawn container, `swapon` is refused (seccomp) and
`/proc/sys` is read-only, so a deploy skips the swap role (`--skip-tags swap`). With
`kernel_tunables=True` both work — `--system-call-filter=@swap`, /proc/sys remounted writable,
a disk-backed `SWAP_MOUNT` for the swap file (set `swap_file_path` under it) — but they act on
the HOST's kernel (swap and `vm.swappiness` are not namespaced), as the `-c local` tests do: the
test must apply `absent` afterwards.

Command line: `python -m tests.infra.bare_host build [--distro NAME|all]` builds the images,
`smoke` boots each, installs `hello` with apt and stops, `clean` deletes the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tests.infra.bare_image import (
    DISTROS,
    PROXY_PORT,
    Distro,
    bare_cache_dir,
    build_bare_rootfs,
)
from tests.infra.nspawn import (
    REPO,
    RUN_TIMEOUT_S,
    WHEELHOUSE_MOUNT,
    Bind,
    Container,
    RigError,
    _run,
    host_kernel_lock,
    require_root,
)

__all__ = [
    "APT_TIMEOUT_S",
    "DISTROS",
    "MEMINFO_MOUNT",
    "PROXY_PORT",
    "SWAP_MOUNT",
    "WHEELHOUSE_MOUNT",
    "BareHost",
    "Bind",
    "Distro",
    "bare_host",
    "build_bare_rootfs",
    "meminfo_with_total",
    "pip_role_vars",
    "wheelhouse_bind",
]

log = structlog.get_logger(component="bare_host")


# A disk-backed folder for a swap file, with `kernel_tunables` (see bare_host()).
SWAP_MOUNT = "/var/lib/ragvisor-test-swap"
# Where the container sees the folder of its fake /proc/meminfo (see bare_host()).
MEMINFO_MOUNT = "/run/ragvisor-test-meminfo"
PROXY_START_TIMEOUT_S = 15.0
# `apt-get update` of three suites plus an install, on a loaded box and a slow mirror.
APT_TIMEOUT_S = 600.0
# ---------------------------------------------------------------------------------------------
# MemTotal


def meminfo_with_total(real_meminfo: str, memtotal_mb: int) -> str:
    """`/proc/meminfo` text whose MemTotal is `memtotal_mb`; MemFree and MemAvailable are the
    real ones capped at 90 % of it (a fresh host uses some), every other line unchanged."""
    total_kb = memtotal_mb * 1024
    lines = []
    for line in real_meminfo.splitlines():
        key, _, rest = line.partition(":")
        if key == "MemTotal":
            lines.append(f"MemTotal:       {total_kb:>8} kB")
        elif key in {"MemFree", "MemAvailable"}:
            real_kb = int(rest.split()[0])
            lines.append(f"{key + ':':<16}{min(real_kb, total_kb * 9 // 10):>8} kB")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The booted host


def pip_role_vars(*folders: str) -> dict[str, object]:
    """The `ragvisor` role's variables that make pip install from bound wheel folders only:
    what an operator of a host without PyPI sets (the image itself configures no pip)."""
    return {"ragvisor_pip_environment": {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": " ".join(folders)}}


@dataclass
class BareHost:
    """A booted bare host: SSH as its admin, root through nsenter, apt through the proxy."""

    distro: Distro
    container: Container
    proxy: subprocess.Popen[str]
    proxy_log: Path
    # The host's side of the file mounted over the container's /proc/meminfo (if it is).
    meminfo_file: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def admin_user(self) -> str:
        return self.distro.admin_user

    def ssh(
        self, command: str, *, check: bool = True, timeout_s: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """A shell command over SSH as the admin (prefix `sudo` for root, as on a droplet)."""
        return self.container.ssh(command, check=check, timeout_s=timeout_s)

    def run(
        self, *argv: str, check: bool = True, timeout_s: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """A command as root through nsenter: the console, for inspecting what the play did."""
        return self.container.run(*argv, check=check, timeout_s=timeout_s)

    def run_in_network(
        self, *argv: str, check: bool = True, timeout_s: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """A host program (e.g. `curl`, which the image lacks) run in the container's network
        namespace: it reaches the services on the container's loopback, as a user on the
        droplet would, while everything else (binaries, files) is the host's."""
        return _run(
            ["nsenter", "-t", str(self.container.leader), "-n", "--", *argv],
            timeout_s=timeout_s,
            check=check,
        )

    def inventory(
        self,
        path: Path,
        *,
        host: str = "bare",
        group: str = "ragvisor",
        host_vars: Mapping[str, object] | None = None,
    ) -> Path:
        """An inventory with this host in `group`, reached over SSH as the admin (the
        playbook's `become: true` escalates); `host_vars` on top of the connection settings."""
        return self.container.write_inventory(path, host=host, group=group, host_vars=host_vars)

    @staticmethod
    def mount_meminfo(container: Container, meminfo_file: Path, memtotal_mb: int) -> None:
        """Write the fake meminfo (the kernel's lines now, MemTotal `memtotal_mb`) and mount
        it over the container's /proc/meminfo unless it already is (rewritten in place, the
        mounted file shows the new text)."""
        meminfo_file.write_text(meminfo_with_total(Path("/proc/meminfo").read_text(), memtotal_mb))
        mounted = container.run("findmnt", "--noheadings", "/proc/meminfo", check=False)
        if mounted.returncode != 0:
            container.run(
                "mount", "--bind", "-o", "ro", f"{MEMINFO_MOUNT}/meminfo", "/proc/meminfo"
            )

    def set_memtotal(self, memtotal_mb: int | None) -> None:
        """Report MemTotal `memtotal_mb` from now on, or the machine's own with None. The other
        lines (free memory, swap) are the kernel's at this call: call it again after the swap
        role, so Ansible and `ragvisor doctor` see the swap. Raises RigError if mount fails."""
        if memtotal_mb is not None:
            self.mount_meminfo(self.container, self.meminfo_file, memtotal_mb)
            return
        self.container.run("umount", "/proc/meminfo")

    def registry_requests(self) -> list[str]:
        """The proxy's log: one line per request (method, URL, status, bytes, outcome)."""
        try:
            return self.proxy_log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        """Power the container off, then stop the proxy (it would exit by itself anyway)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.container.stop()
        finally:
            if self.proxy.stdout is not None:
                self.proxy.stdout.close()
            if self.proxy.poll() is None:
                self.proxy.terminate()
                try:
                    self.proxy.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proxy.kill()
                    self.proxy.wait(timeout=10)


def _start_proxy(
    leader: int, distro: Distro, session_dir: Path
) -> tuple[subprocess.Popen[str], Path]:
    """The registry proxy listening in the container's network; returns once it accepts."""
    proxy_log = session_dir / "registry-proxy.log"
    packages = bare_cache_dir() / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "tests.infra.registry_proxy",
        "--netns-pid",
        str(leader),
        "--port",
        str(PROXY_PORT),
        "--cache-dir",
        str(packages),
        *(arg for host in distro.registry_hosts for arg in ("--allow", host)),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with proxy_log.open("w") as sink:
        proxy = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            start_new_session=True,  # a Ctrl-C must not reach it before teardown does
        )
    assert proxy.stdout is not None
    ready, _, _ = select.select([proxy.stdout], [], [], PROXY_START_TIMEOUT_S)
    line = proxy.stdout.readline() if ready else ""
    if not line.startswith("listening"):
        proxy.stdout.close()
        proxy.kill()
        proxy.wait(timeout=10)
        raise RigError(f"the registry proxy did not start: {proxy_log.read_text()[-3000:]}")
    return proxy, proxy_log


@contextlib.contextmanager
def bare_host(
    session_dir: Path,
    *,
    distro: str = "debian12",
    binds: Sequence[Bind] = (),
    memtotal_mb: int | None = None,
    machine: str | None = None,
    kernel_tunables: bool = False,
) -> Iterator[BareHost]:
    """A freshly booted bare host for the `with` block; powered off whatever happens.

    `binds` show host folders or files to the container (wheels, archives, GGUF files);
    `memtotal_mb` sets the MemTotal it reports. `kernel_tunables` lets the swap and sysctl
    roles run: `swapon` is allowed, `/proc/sys` is writable and `SWAP_MOUNT` is a disk-backed
    folder for the swap file (a swap file cannot live on the overlay's tmpfs). Both act on the
    HOST's kernel — swap and `vm.swappiness` are not namespaced — so the test must apply the
    roles' `absent` state afterwards, as the `-c local` tests do. Raises RigError when it cannot
    build or boot.
    """
    with contextlib.ExitStack() as stack:
        if kernel_tunables:
            stack.enter_context(host_kernel_lock())
        yield from _bare_host(session_dir, distro, binds, memtotal_mb, machine, kernel_tunables)


def _bare_host(
    session_dir: Path,
    distro: str,
    binds: Sequence[Bind],
    memtotal_mb: int | None,
    machine: str | None,
    kernel_tunables: bool,
) -> Iterator[BareHost]:
    """bare_host()'s body, inside the host-kernel lock when it needs one."""
    spec = DISTROS[distro]()
    rootfs = build_bare_rootfs(distro)
    session_dir.mkdir(parents=True, exist_ok=True)
    all_binds = list(binds)
    # The folder of the fake /proc/meminfo goes in at boot; BareHost.set_memtotal() mounts the
    # file over /proc/meminfo from the host's side (an nspawn bind onto /proc is made after
    # entering the container, where host paths are gone: "Failed to stat").
    meminfo_folder = session_dir / "meminfo"
    meminfo_folder.mkdir(exist_ok=True)
    (meminfo_folder / "meminfo").write_text(Path("/proc/meminfo").read_text())
    all_binds.append(Bind(meminfo_folder, MEMINFO_MOUNT))
    nspawn_args: list[str] = []
    if kernel_tunables:
        swap_folder = session_dir / "swap"
        swap_folder.mkdir(exist_ok=True)
        all_binds.append(Bind(swap_folder, SWAP_MOUNT, writable=True))
        nspawn_args.append("--system-call-filter=@swap")
    started = time.monotonic()
    container = Container.boot(
        rootfs,
        session_dir / "machine",
        binds=all_binds,
        machine=machine or f"bare-{os.getpid()}",
        ssh_user=spec.admin_user,
        nspawn_args=nspawn_args,
    )
    try:
        if memtotal_mb is not None:
            BareHost.mount_meminfo(container, meminfo_folder / "meminfo", memtotal_mb)
        if kernel_tunables:  # nspawn mounts it read-only; from the host's side we may remount
            container.run("mount", "-o", "remount,bind,rw", "/proc/sys")
        proxy, proxy_log = _start_proxy(container.leader, spec, session_dir)
    except BaseException:
        container.stop()
        raise
    host = BareHost(spec, container, proxy, proxy_log, meminfo_folder / "meminfo")
    log.info(
        "bare_host.ready",
        distro=distro,
        machine=container.machine,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    try:
        yield host
    finally:
        host.stop()


def wheelhouse_bind(wheelhouse: Path) -> Bind:
    """The wheelhouse (nspawn.build_wheelhouse) where `pip_role_vars(WHEELHOUSE_MOUNT, …)` looks."""
    return Bind(wheelhouse, WHEELHOUSE_MOUNT)


# ---------------------------------------------------------------------------------------------
# Command line


def _smoke(distro: str) -> int:
    """Boot, log in as the admin, apt-get install `hello` through the proxy, stop."""
    with tempfile.TemporaryDirectory(prefix="ragvisor-bare-") as tmp:
        started = time.monotonic()
        with bare_host(Path(tmp), distro=distro, memtotal_mb=3900) as host:
            booted_s = time.monotonic() - started
            who = host.ssh("id -un && sudo -n id -un").stdout.split()
            host.ssh(
                "sudo DEBIAN_FRONTEND=noninteractive apt-get update -q && "
                "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                "--no-install-recommends hello",
                timeout_s=APT_TIMEOUT_S,
            )
            hello = host.ssh("hello").stdout.strip()
            memtotal = host.ssh("grep MemTotal /proc/meminfo").stdout.strip()
        print(f"{distro}: up in {booted_s:.1f} s; ssh as {who}; {hello!r}; {memtotal}")
        return 0 if who == [host.admin_user, "root"] and hello == "Hello, world!" else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.infra.bare_host", description=__doc__)
    parser.add_argument("command", choices=["build", "smoke", "clean"])
    parser.add_argument("--distro", choices=[*DISTROS, "all"], default="all")
    args = parser.parse_args(argv)
    if reason := require_root():
        print(reason, file=sys.stderr)
        return 2
    if args.command == "clean":
        shutil.rmtree(bare_cache_dir(), ignore_errors=True)
        return 0
    names = list(DISTROS) if args.distro == "all" else [args.distro]
    status = 0
    for name in names:
        started = time.monotonic()
        root = build_bare_rootfs(name)
        print(f"{name}: image ready in {root} ({time.monotonic() - started:.0f} s)")
        if args.command == "smoke":
            status |= _smoke(name)
    return status


if __name__ == "__main__":
    sys.exit(main())
