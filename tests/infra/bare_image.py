"""The bare host's image: a Debian 12 or Ubuntu 24.04 root file system as a new droplet has it.

The image (`build_bare_rootfs()`, cached per distribution in `$RAGVISOR_CACHE/bare-host/<name>`):
`debootstrap --variant=minbase` plus `IMAGE_PACKAGES` — systemd (+ systemd-sysv: systemd is
PID 1 and `reboot` exists), dbus (every systemd cloud image has it; polkitd needs it),
openssh-server, sudo, python3 (cloud-init's own language: every cloud image has it, and Ansible
needs it), ca-certificates (in every cloud image, pulled in by cloud-init's python3-requests;
without it any https download fails for a reason no real host has). Deliberately absent:
python3-venv, python3-packaging, polkitd, zstd, a JRE, curl — the roles must install what they
use. Then what cloud-init does on first boot, done once at build time: a non-root admin (`admin`
on Debian as on AWS's images, `ubuntu` on Ubuntu) in groups adm and sudo with passwordless sudo
(`/etc/sudoers.d/90-cloud-init-users`), key-only SSH, and the distribution's full apt sources
(release, updates, security) in deb822 form. apt's lists are empty, as on a fresh image: a role
that installs without `update_cache` fails here. The apt timers are masked so no daily job takes
dpkg's lock in the middle of a test.

Ubuntu 24.04 (`distro="ubuntu2404"`): archive.ubuntu.com and security.ubuntu.com are reachable
from this machine; bookworm's debootstrap has no `noble` script, so the `gutsy` script (what
every later Ubuntu suite links to) is named explicitly, with Ubuntu's archive keyring taken from
its pinned `ubuntu-keyring` package. Its Python is 3.12: the wheelhouse, built by the host's 3.11,
does not fit it (the role's Python-tag check is what must say so).

The booting, the network and the test API are in tests/infra/bare_host.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import structlog

from tests.infra import nspawn
from tests.infra.nspawn import (
    RigError,
    _locked,
    _run,
    _stamp_matches,
    debian_mirror,
    ensure_host_tools,
)

log = structlog.get_logger(component="bare_image")

# Bump when the recipe changes: a cached image with another stamp is rebuilt.
RECIPE_VERSION = 2
IMAGE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "python3",
    "ca-certificates",
)
HOSTNAME = "bare-host"
# apt-cacher-ng's customary port; inside the container's own loopback, so it collides with nothing.
PROXY_PORT = 3142
DEBOOTSTRAP_TIMEOUT_S = 1200.0
DOWNLOAD_TIMEOUT_S = 60.0
# nspawn's, and the console getty that a bare image (no terminal under the tests) would start.
MASKED_UNITS = (*nspawn.MASKED_UNITS, "console-getty.service")
# Ubuntu's archive keyring, from noble's main/binary-amd64/Packages (the .deb is checked
# against this digest before its keyring is used to check everything else).
UBUNTU_KEYRING_URL = "http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb"
UBUNTU_KEYRING_SHA256 = "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8"


@dataclass(frozen=True)
class Distro:
    """One image recipe: what debootstrap fetches, who logs in, where apt may go."""

    name: str
    suite: str
    mirror: str
    sources_file: str
    sources: str
    admin_user: str
    registry_hosts: tuple[str, ...]
    # bookworm's debootstrap lacks scripts for newer Ubuntu suites; `gutsy` is what they all use.
    script: str | None = None
    components: tuple[str, ...] = ("main",)


def _debian12() -> Distro:
    mirror = debian_mirror()
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    sources = (
        f"Types: deb\nURIs: {mirror}\nSuites: bookworm bookworm-updates\nComponents: main\n"
        f"Signed-By: {keyring}\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        f"Components: main\nSigned-By: {keyring}\n"
    )
    hosts = {host_of(mirror), "deb.debian.org", "security.debian.org"}
    return Distro(
        "debian12", "bookworm", mirror, "debian.sources", sources, "admin", tuple(sorted(hosts))
    )


def _ubuntu2404() -> Distro:
    keyring = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
    # main and universe: what the roles can want; restricted/multiverse would only make every
    # `apt-get update` slower.
    sources = (
        "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\n"
        "Suites: noble noble-updates\nComponents: main universe\n"
        f"Signed-By: {keyring}\n\n"
        "Types: deb\nURIs: http://security.ubuntu.com/ubuntu/\nSuites: noble-security\n"
        f"Components: main universe\nSigned-By: {keyring}\n"
    )
    return Distro(
        "ubuntu2404",
        "noble",
        "http://archive.ubuntu.com/ubuntu",
        "ubuntu.sources",
        sources,
        "ubuntu",
        ("archive.ubuntu.com", "security.ubuntu.com"),
        script="gutsy",
        components=("main", "universe"),
    )


DISTROS = {"debian12": _debian12, "ubuntu2404": _ubuntu2404}


def host_of(url: str) -> str:
    """The host name of a URL (`http://deb.debian.org/debian` -> `deb.debian.org`)."""
    match = re.match(r"^[a-z]+://([^/:]+)", url)
    if match is None:
        raise RigError(f"not a URL: {url}")
    return match.group(1)


def bare_cache_dir() -> Path:
    """`$RAGVISOR_CACHE/bare-host`, apart from the deploy rig's `nspawn` cache."""
    base = os.environ.get("RAGVISOR_CACHE") or "~/.cache/ragvisor"
    return Path(base).expanduser() / "bare-host"


# ---------------------------------------------------------------------------------------------
# The image


def _ubuntu_keyring(cache: Path) -> Path:
    """Ubuntu's archive keyring, from the pinned .deb (fetched once, checked by digest)."""
    keyring = cache / "ubuntu-archive-keyring.gpg"
    if keyring.exists():
        return keyring
    with urllib.request.urlopen(UBUNTU_KEYRING_URL, timeout=DOWNLOAD_TIMEOUT_S) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != UBUNTU_KEYRING_SHA256:
        raise RigError(f"{UBUNTU_KEYRING_URL}: sha256 {digest}, pinned {UBUNTU_KEYRING_SHA256}")
    with tempfile.TemporaryDirectory(prefix="ubuntu-keyring-") as tmp:
        deb = Path(tmp) / "keyring.deb"
        deb.write_bytes(data)
        _run(["dpkg-deb", "-x", deb, Path(tmp) / "x"], timeout_s=60)
        shutil.copy2(Path(tmp) / "x/usr/share/keyrings/ubuntu-archive-keyring.gpg", keyring)
    return keyring


def _stamp(distro: Distro) -> str:
    return (
        f"recipe={RECIPE_VERSION} distro={distro.name} suite={distro.suite} "
        f"packages={','.join(IMAGE_PACKAGES)} admin={distro.admin_user}\n"
    )


def _configure_image(root: Path, distro: Distro) -> None:
    """What the provider's image and cloud-init's first boot leave on a new droplet."""
    (root / "etc/hostname").write_text(f"{HOSTNAME}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")
    (root / "etc/machine-id").write_text("")  # nspawn gives each boot a transient id
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d" / distro.sources_file).write_text(distro.sources)
    (root / "etc/apt/apt.conf.d/00ragvisor-test-proxy").write_text(
        "// The bare-host test rig's only way out (tests/infra/registry_proxy.py): it forwards\n"
        "// to the distribution's registry. Not something ragvisor's roles install.\n"
        f'Acquire::http::Proxy "http://127.0.0.1:{PROXY_PORT}/";\n'
        f'Acquire::https::Proxy "http://127.0.0.1:{PROXY_PORT}/";\n'
    )
    user = distro.admin_user
    _run(
        [
            "chroot",
            root,
            "useradd",
            "--create-home",
            "--shell",
            "/bin/bash",
            "--groups",
            "adm,sudo",
            "--comment",
            "cloud admin",
            user,
        ],
        timeout_s=60,
    )
    _run(["chroot", root, "passwd", "--lock", user], timeout_s=60)
    _run(["chroot", root, "install", "-d", "-m", "0700", "-o", user, "-g", user,
          f"/home/{user}/.ssh"], timeout_s=60)  # fmt: skip
    _run(["chroot", root, "install", "-m", "0600", "-o", user, "-g", user, "/dev/null",
          f"/home/{user}/.ssh/authorized_keys"], timeout_s=60)  # fmt: skip
    sudoers = root / "etc/sudoers.d/90-cloud-init-users"
    sudoers.write_text(
        f"# As cloud-init writes it.\n\n# User rules for {user}\n{user} ALL=(ALL) NOPASSWD:ALL\n"
    )
    sudoers.chmod(0o440)
    (root / "etc/ssh/sshd_config.d/50-cloud-init.conf").write_text(
        "PasswordAuthentication no\nPermitRootLogin no\n"
    )
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # No package lists (debootstrap leaves the release's): a role must `update_cache` first.
    for leftover in [
        *(root / "var/cache/apt/archives").glob("*.deb"),
        *(root / "var/cache/apt").glob("*.bin"),
        *(p for p in (root / "var/lib/apt/lists").iterdir() if p.is_file() and p.name != "lock"),
    ]:
        leftover.unlink()


def build_bare_rootfs(distro_name: str = "debian12", cache: Path | None = None) -> Path:
    """The cached image of `distro_name`, bootstrapped first if missing or of another recipe.

    Raises RigError when debootstrap fails (its output is in the message).
    """
    distro = DISTROS[distro_name]()
    cache = (cache or bare_cache_dir()) / distro.name
    root = cache / "rootfs"
    stamp = _stamp(distro)
    with _locked(cache / ".lock"):
        if _stamp_matches(root / ".ragvisor-rootfs", stamp):
            return root
        ensure_host_tools()
        started = time.monotonic()
        partial = cache / "rootfs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        argv: list[str | Path] = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(IMAGE_PACKAGES)}",
            f"--components={','.join(distro.components)}",
        ]
        if distro.name.startswith("ubuntu"):
            argv.append(f"--keyring={_ubuntu_keyring(cache)}")
        argv += [distro.suite, partial, distro.mirror]
        if distro.script:
            argv.append(f"/usr/share/debootstrap/scripts/{distro.script}")
        _run(argv, timeout_s=DEBOOTSTRAP_TIMEOUT_S)
        _configure_image(partial, distro)
        (partial / ".ragvisor-rootfs").write_text(stamp)
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
        log.info(
            "bare_image.rootfs_built",
            distro=distro.name,
            path=str(root),
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return root
