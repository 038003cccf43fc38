"""An offline apt repository for the nspawn container, which has no network.

The `ragvisor` role installs what a bare host lacks with apt (`polkitd` for the Ollama restart
rule; `python3-apt`, which Ansible's apt module installs for itself first). The cached rootfs
(tests/infra/nspawn.py) does not hold them — a test environment that already contains what the
product installs would hide a missing install — so the container gets them the way an
air-gapped host would: from a local mirror. `build_apt_mirror()` asks the host's apt which
packages the rootfs lacks for `PACKAGES` (a simulated install against the rootfs's own dpkg
status), downloads exactly those, and writes a flat repository (`Packages`, `Release`);
`use_in()` points the container's apt at it, bound read-only at `APT_MIRROR_MOUNT`.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.infra.nspawn import Bind, Container, RigError, _locked, _stamp_matches, cache_dir

# What the roles install with apt in the deploy tests, beyond the rootfs.
PACKAGES = ("polkitd", "python3-apt")
APT_MIRROR_MOUNT = "/opt/ragvisor-apt"
APT_TIMEOUT_S = 600.0
_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+)", re.MULTILINE)


def _apt(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RigError(f"timed out after {APT_TIMEOUT_S:.0f} s: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise RigError(
            f"exit {proc.returncode}: {' '.join(argv)}\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def missing_packages(rootfs: Path, packages: tuple[str, ...] = PACKAGES) -> list[tuple[str, str]]:
    """(name, version) of every package apt would install into `rootfs` for `packages`,
    dependencies included, as the host's apt lists resolve them."""
    status = rootfs / "var/lib/dpkg/status"
    simulate = [
        "apt-get",
        "install",
        "--simulate",
        "-o",
        f"Dir::State::status={status}",
        *packages,
    ]
    return _INST.findall(_apt(simulate).stdout)


def _packages_index(folder: Path) -> str:
    """The `Packages` file of a flat repository: each .deb's control fields, then where it is."""
    paragraphs = []
    for deb in sorted(folder.glob("*.deb")):
        control = _apt(["dpkg-deb", "--field", str(deb)]).stdout.rstrip("\n")
        data = deb.read_bytes()
        paragraphs.append(
            f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    return "\n".join(paragraphs)


def _release(packages_text: str) -> str:
    data = packages_text.encode()
    return (
        "Origin: ragvisor-test\nLabel: ragvisor-test\nSuite: ragvisor-test\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\nArchitectures: amd64 arm64 all\n"
        f"SHA256:\n {hashlib.sha256(data).hexdigest()} {len(data)} Packages\n"
    )


def build_apt_mirror(rootfs: Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    """The mirror of `packages` for `rootfs`, downloaded once into
    `$RAGVISOR_CACHE/nspawn/apt-mirror-<digest of the package set>`: each role test asks for
    its own set (the ragvisor role's, the ollama role's `zstd`), and one set's mirror never
    replaces another's."""
    cache = cache_dir()
    key = hashlib.sha256(",".join(sorted(packages)).encode()).hexdigest()[:12]
    mirror = cache / f"apt-mirror-{key}"
    stamp = f"packages={','.join(packages)} rootfs={(rootfs / '.ragvisor-rootfs').read_text()}"
    with _locked(cache / f".apt-mirror-{key}.lock"):
        if _stamp_matches(mirror / ".ragvisor-apt-mirror", stamp):
            return mirror
        started = time.monotonic()
        try:
            wanted = missing_packages(rootfs, packages)
        except RigError:
            _apt(["apt-get", "update", "-q"])
            wanted = missing_packages(rootfs, packages)
        partial = cache / f"apt-mirror-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        partial.chmod(0o755)  # apt-get download drops root for _apt where it can
        _apt(
            ["apt-get", "download", "-q", *(f"{name}={version}" for name, version in wanted)],
            partial,
        )
        for deb in partial.glob("*%*.deb"):  # an epoch comes URL-escaped (1%3a2.0): keep it plain
            deb.rename(deb.with_name(deb.name.replace("%3a", "_")))
        index = _packages_index(partial)
        (partial / "Packages").write_text(index)
        (partial / "Release").write_text(_release(index))
        (partial / ".ragvisor-apt-mirror").write_text(stamp)
        shutil.rmtree(mirror, ignore_errors=True)
        partial.rename(mirror)
        print(f"apt mirror: {len(wanted)} packages in {time.monotonic() - started:.0f} s")
        return mirror


def mirror_bind(mirror: Path) -> Bind:
    """The read-only bind that shows the mirror to the container."""
    return Bind(mirror, APT_MIRROR_MOUNT)


def use_in(container: Container) -> None:
    """Make the mirror the container's only apt source (its overlay is volatile)."""
    container.run("sh", "-c", "rm -f /etc/apt/sources.list.d/* /var/lib/apt/lists/*_Packages*")
    container.write_file(
        "/etc/apt/sources.list",
        "# Written by tests/infra/apt_mirror.py: the container is offline.\n"
        f"deb [trusted=yes] file:{APT_MIRROR_MOUNT} ./\n",
    )
