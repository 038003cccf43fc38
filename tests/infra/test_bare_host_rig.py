"""The bare-host rig (tests/infra/bare_host.py): the promises the end-to-end deploy relies on.

Per distribution (Debian 12, then Ubuntu 24.04), one host booted at MemTotal 3,900 MB: systemd
is PID 1; the admin logs in over SSH and `become` (sudo, no password) makes it root; the image
lacks what the roles install (python3-venv, python3-packaging, polkitd, zstd, a JRE); apt
installs `hello` from the real registry through the proxy, which refuses any other host;
Ansible's apt module installs with `become`; Ansible's facts report `memtotal_mb` 3900 (and the
rig can change or remove the figure); and after all that, a second boot starts bare again — this
one with `kernel_tunables`, where a swap file can be switched on (briefly: it is the host's swap).
The registry proxy's forwarding, caching and refusals are also checked against a local upstream.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import yaml

from tests.infra.bare_host import APT_TIMEOUT_S, PROXY_PORT, SWAP_MOUNT, BareHost, bare_host
from tests.infra.nspawn import require_root
from tests.infra.playbook import ANSIBLE_PLAYBOOK, REPO, ansible_environment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

MEMTOTAL_MB = 3900
# What a new droplet lacks and the roles must install (each name exists in both distributions).
ROLE_INSTALLED = ("python3-venv", "python3-packaging", "polkitd", "zstd", "default-jre-headless")
APT_INSTALL_HELLO = (
    "sudo DEBIAN_FRONTEND=noninteractive apt-get update -q && "
    "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends hello"
)


@pytest.fixture(scope="module", params=["debian12", "ubuntu2404"])
def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BareHost]:
    """One bare host per distribution, at MemTotal 3,900 MB; powered off after its tests."""
    session = tmp_path_factory.mktemp(f"bare-{request.param}")
    with bare_host(session, distro=request.param, memtotal_mb=MEMTOTAL_MB) as booted:
        yield booted


def ansible_adhoc(host: BareHost, tmp_path: Path, *args: str) -> str:
    """Run one module on the host with `ansible` (ad hoc) and return what it printed."""
    inventory = host.inventory(tmp_path / "inventory.yml")
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK.with_name("ansible")), "-i", str(inventory), "bare", *args],
        cwd=REPO,
        env=ansible_environment(tmp_path / "ansible-state"),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_systemd_is_pid_1_and_the_admin_logs_in_over_ssh(host: BareHost) -> None:
    """The container runs systemd as PID 1 and SSH lands as the non-root admin."""
    assert host.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert host.ssh("id -un").stdout.strip() == host.admin_user
    assert host.ssh("id -u").stdout.strip() != "0"
    state = host.ssh("systemctl is-system-running").stdout.strip()
    assert state in {"running", "degraded"}, host.run("systemctl", "--failed", check=False).stdout


def test_become_makes_the_admin_root_without_a_password(host: BareHost, tmp_path: Path) -> None:
    """Ansible's `become` (sudo, as cloud-init configures it) runs modules as root."""
    assert host.ssh("sudo -n id -u").stdout.strip() == "0"
    out = ansible_adhoc(host, tmp_path, "--become", "-m", "ansible.builtin.command", "-a", "id -un")
    assert out.split(">>", 1)[1].strip() == "root", out  # bare | CHANGED | rc=0 >>\nroot


def test_the_image_lacks_what_the_roles_install(host: BareHost) -> None:
    """python3-venv, python3-packaging, polkitd, zstd and a JRE are not on a new droplet."""
    for package in ROLE_INSTALLED:
        status = host.run("dpkg-query", "-W", "-f=${Status}", package, check=False).stdout
        assert not status.endswith(" installed"), f"{package} is in the bare image ({status})"
    venv = host.ssh("python3 -m venv /tmp/probe-venv", check=False)
    assert venv.returncode != 0, "python3 -m venv works on the bare image"
    lists = host.run("find", "/var/lib/apt/lists", "-name", "*_Packages*").stdout
    assert lists == "", f"the image ships apt lists:\n{lists}"


def test_memtotal_is_what_the_rig_set(host: BareHost, tmp_path: Path) -> None:
    """/proc/meminfo and Ansible's gathered facts both report MemTotal 3,900 MB."""
    meminfo = host.ssh("grep MemTotal /proc/meminfo").stdout.split()
    assert meminfo[1] == str(MEMTOTAL_MB * 1024)
    host.set_memtotal(4096)  # a new snapshot in place of the first
    assert host.ssh("head -1 /proc/meminfo").stdout.split()[1] == str(4096 * 1024)
    host.set_memtotal(None)  # the machine's own
    real = Path("/proc/meminfo").read_text().splitlines()[0]
    assert host.ssh("head -1 /proc/meminfo").stdout.split() == real.split()
    host.set_memtotal(MEMTOTAL_MB)
    out = ansible_adhoc(
        host, tmp_path, "-m", "ansible.builtin.setup", "-a", "filter=ansible_memtotal_mb"
    )
    facts = yaml.safe_load(out.split("=>", 1)[1])["ansible_facts"]  # ansible.cfg: YAML results
    assert facts == {"ansible_memtotal_mb": MEMTOTAL_MB}


def test_apt_installs_from_the_real_registry(host: BareHost) -> None:
    """`apt-get update && apt-get install hello` works through the proxy, from the registry."""
    host.ssh(APT_INSTALL_HELLO, timeout_s=APT_TIMEOUT_S)
    assert host.ssh("hello").stdout.strip() == "Hello, world!"
    requests = host.registry_requests()
    assert any("InRelease" in line and " 200 " in line for line in requests), requests[-20:]
    fetched = [line for line in requests if "/hello_" in line and ".deb" in line]
    assert fetched, requests[-20:]
    assert fetched[-1].split()[-1] in {"miss", "hit"}, fetched  # a package file: cached


def test_ansible_apt_installs_with_become(host: BareHost, tmp_path: Path) -> None:
    """Ansible's apt module, escalated, installs from the registry (python3-apt, which the module
    needs, is installed by the module itself first)."""
    out = ansible_adhoc(
        host, tmp_path, "--become", "-m", "ansible.builtin.apt", "-a", "name=zstd update_cache=true"
    )
    assert "CHANGED" in out.splitlines()[0], out
    assert host.run("zstd", "--version").stdout.startswith("*** Zstandard")


def test_the_proxy_refuses_hosts_that_are_not_the_registry(host: BareHost) -> None:
    """A download from anywhere but the distribution's registry gets 403 and the reason."""
    probe = (
        "import urllib.error, urllib.request\n"
        f"proxy = urllib.request.ProxyHandler({{'http': 'http://127.0.0.1:{PROXY_PORT}'}})\n"
        "try:\n"
        "    urllib.request.build_opener(proxy).open('http://example.com/', timeout=20)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code, exc.read().decode().strip())\n"
    )
    out = host.ssh(f"python3 -c {shlex.quote(probe)}").stdout
    assert out.startswith("403 "), out
    assert "example.com is not a package registry" in out


def test_a_second_boot_starts_bare_again(host: BareHost, tmp_path: Path) -> None:
    """What the first boot installed and wrote is gone after a reboot from the cached image;
    booted with `kernel_tunables`, /proc/sys is writable and a swap file can be switched on."""
    host.ssh(APT_INSTALL_HELLO, timeout_s=APT_TIMEOUT_S)
    host.ssh("touch ~/left-by-the-first-boot")
    host.stop()  # one rig container at a time
    with bare_host(tmp_path / "second", distro=host.distro.name, kernel_tunables=True) as second:
        assert second.ssh("command -v hello || echo absent").stdout.strip() == "absent"
        assert second.ssh("test -e ~/left-by-the-first-boot || echo absent").stdout == "absent\n"
        # Without memtotal_mb the host reports the machine's own MemTotal.
        real = Path("/proc/meminfo").read_text().splitlines()[0]
        assert second.ssh("head -1 /proc/meminfo").stdout.split() == real.split()
        # Swap and swappiness are the host kernel's: write back the value read, swap on and off.
        swappiness = second.run("cat", "/proc/sys/vm/swappiness").stdout.strip()
        second.ssh(f"sudo sysctl -q -w vm.swappiness={swappiness}")
        swap_file = f"{SWAP_MOUNT}/probe"
        second.ssh(f"sudo fallocate -l 16M {swap_file} && sudo chmod 600 {swap_file}")
        second.ssh(f"sudo mkswap -q {swap_file}")
        try:
            second.ssh(f"sudo swapon {swap_file}")
            assert swap_file in second.ssh("cat /proc/swaps").stdout
        finally:
            second.ssh(f"sudo swapoff {swap_file}", check=False)


def test_the_proxy_forwards_caches_package_files_and_refuses_the_rest(tmp_path: Path) -> None:
    """Against a local upstream: an index passes through every time, a pool .deb is served from
    the cache once fetched (even with the upstream gone), other hosts and ports are refused."""
    site = tmp_path / "site"
    (site / "dists").mkdir(parents=True)
    (site / "dists/InRelease").write_text("index v1\n")
    (site / "pool/main/h").mkdir(parents=True)
    (site / "pool/main/h/hello_1_all.deb").write_bytes(b"deb-bytes" * 1000)
    upstream = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(site),
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proxy: subprocess.Popen[str] | None = None
    try:
        assert upstream.stdout is not None
        port = int(first_line(upstream.stdout).split(" port ")[1].split()[0])
        proxy_port = free_port()
        proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.infra.registry_proxy", "--netns-pid", str(os.getpid()),
             "--port", str(proxy_port), "--allow", "127.0.0.1", "--cache-dir", str(tmp_path / "c")],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert proxy.stdout is not None
        assert first_line(proxy.stdout).startswith("listening")
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{proxy_port}"})
        )
        base = f"http://127.0.0.1:{port}"
        with opener.open(f"{base}/dists/InRelease", timeout=10) as response:
            assert response.read() == b"index v1\n"
        with opener.open(f"{base}/pool/main/h/hello_1_all.deb", timeout=10) as response:
            assert response.read() == b"deb-bytes" * 1000
        (site / "dists/InRelease").write_text("index v2\n")
        upstream.terminate()
        upstream.wait(timeout=10)
        with opener.open(f"{base}/pool/main/h/hello_1_all.deb", timeout=10) as response:
            assert response.read() == b"deb-bytes" * 1000  # from the cache: the upstream is gone
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open("http://localhost:9/anything", timeout=10)
        assert refused.value.code == 403
        refused.value.close()
    finally:
        for process in (upstream, proxy):
            if process is not None:
                process.kill()
                process.wait(timeout=10)
                if process.stdout is not None:
                    process.stdout.close()


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def first_line(stream: IO[str], timeout_s: float = 15.0) -> str:
    """The first line a child prints, waited for at most `timeout_s`."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    assert ready, f"nothing printed within {timeout_s:.0f} s"
    return stream.readline()
