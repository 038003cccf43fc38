"""A forwarding HTTP proxy for the package registries, listening inside a container's network.

The bare-host rig (tests/infra/bare_host.py) boots its container with `--private-network`: the
container has only its own loopback, so its sshd, Neo4j, Ollama and the daemon cannot collide
with the host's ports or another test's. Yet the roles must really `apt-get install` from
Debian's (or Ubuntu's) registry. This proxy joins the two: one host process opens its listening
socket *in the container's network namespace* (`setns(2)` on one thread, just for `socket()` +
`bind()`; a socket stays in the namespace it was made in), then serves from the host's
namespace, where the registry is reachable. Inside, apt is told `Acquire::http::Proxy
"http://127.0.0.1:3142/"`; nothing else in the container changes and nothing on the host does
either (no `ip_forward`, no NAT rules, nothing to undo after a crash).

What it forwards, and why no more:

- `GET`/`HEAD` of absolute `http://` URLs and `CONNECT host:443`, only to `--allow`ed hosts
  (the archive and security hosts of the distribution). Anything else gets 403 with the reason:
  a role that quietly downloads from elsewhere fails here as it would on a host behind a strict
  egress firewall, instead of passing on a network the test happens to have.
- Package files (`…/pool/….deb`, immutable by name; apt checks each against the SHA-256 in the
  signed index) are kept in `--cache-dir`, so a second run does not fetch ~100 MB again. Indexes
  (`InRelease`, `Packages`) are never cached: every `apt-get update` asks the real registry.

Every request is logged as one line on stderr (method, URL, status, bytes, `hit`/`miss`/`pass`/
`denied`): the tests read it to show that apt really went to the registry.

The process exits by itself when the container's leader (`--netns-pid`) or its own parent is
gone, so a test session killed before its teardown leaves no proxy behind.

Run: `python -m tests.infra.registry_proxy --netns-pid PID --port 3142 --allow deb.debian.org
--cache-dir DIR` — it prints `listening 127.0.0.1:3142` once it accepts connections.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import os
import select
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CLONE_NEWNET = 0x40000000
# Generous for a slow mirror on a loaded box; apt's own timeout is 120 s per connection.
UPSTREAM_TIMEOUT_S = 60.0
CHUNK_BYTES = 64 * 1024
# How often the watchdog looks for the container's leader and our parent.
WATCH_INTERVAL_S = 0.5
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


def listening_socket_in(netns_pid: int, host: str, port: int) -> socket.socket:
    """A TCP socket listening on `host:port` in the network namespace of process `netns_pid`.

    Raises OSError when the namespace cannot be entered (not root, process gone) or the port
    is taken there. The calling thread is back in its own namespace when this returns.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{netns_pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into the network of pid {netns_pid}: {os.strerror(errno)}")
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # never serve from the container's side
                os._exit(3)
    finally:
        os.close(own)
        os.close(target)
    return sock


def is_cacheable(url: urllib.parse.SplitResult) -> bool:
    """A package file: immutable under its pool path (a new build gets a new name)."""
    return "/pool/" in url.path and url.path.endswith(".deb") and ".." not in url.path


class RegistryProxy(ThreadingHTTPServer):
    """The server: an allowlist of upstream hosts and a folder of cached package files."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, allowed_hosts: frozenset[str], cache_dir: Path):
        super().__init__(sock.getsockname()[:2], ProxyHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.allowed_hosts = allowed_hosts
        self.cache_dir = cache_dir


class ProxyHandler(BaseHTTPRequestHandler):
    """One client connection (HTTP/1.1 keep-alive: apt sends many requests on one)."""

    protocol_version = "HTTP/1.1"
    server: RegistryProxy

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")
        sys.stderr.flush()

    def _note(self, outcome: str, status: int, size: int) -> None:
        self.log_message("%s %s %d %d %s", self.command, self.path, status, size, outcome)

    def _deny(self, status: int, reason: str) -> None:
        body = f"registry proxy (tests/infra/registry_proxy.py): {reason}\n".encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._note("denied", status, len(body))

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self._deny(400, f"not an absolute http:// URL: {self.path}")
            return
        if url.hostname not in self.server.allowed_hosts:
            self._deny(403, f"{url.hostname} is not a package registry this host may reach")
            return
        cached = self.server.cache_dir / url.hostname / url.path.lstrip("/")
        if is_cacheable(url) and "Range" not in self.headers and cached.is_file():
            self._send_cached(cached)
            return
        self._forward(url, cached if is_cacheable(url) and "Range" not in self.headers else None)

    def _send_cached(self, path: Path) -> None:
        size = path.stat().st_size
        self.send_response_only(200)
        self.send_header("Content-Type", "application/vnd.debian.binary-package")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command != "HEAD":
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    self.wfile.write(chunk)
        self._note("hit", 200, size)

    def _forward(self, url: urllib.parse.SplitResult, cache_to: Path | None) -> None:
        upstream = http.client.HTTPConnection(
            url.hostname or "", url.port or 80, timeout=UPSTREAM_TIMEOUT_S
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        path = url.path + (f"?{url.query}" if url.query else "")
        try:
            upstream.request(self.command, path or "/", headers=headers)
            response = upstream.getresponse()
            if response.length is None and self.command != "HEAD":
                body: bytes | None = response.read()  # chunked or close-delimited: index-sized
            else:
                body = None
            self.send_response_only(response.status, response.reason)
            head = self.command == "HEAD"  # its Content-Length is the GET's: pass it on
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and (head or key.lower() != "content-length"):
                    self.send_header(key, value)
            length = len(body) if body is not None else response.length or 0
            if not head:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            if head:
                self._note("pass", response.status, 0)
                return
            if body is not None:
                self.wfile.write(body)
            else:
                self._stream(response, length, cache_to if response.status == 200 else None)
            self._note("miss" if cache_to else "pass", response.status, length)
        except (OSError, http.client.HTTPException) as exc:
            self.log_message("upstream error for %s: %r", self.path, exc)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send_error(502, f"upstream {url.hostname}: {exc}")
        finally:
            upstream.close()

    def _stream(
        self, response: http.client.HTTPResponse, length: int, cache_to: Path | None
    ) -> None:
        """Copy the body to the client; into the cache too, renamed only once complete."""
        partial = None
        if cache_to is not None:
            cache_to.parent.mkdir(parents=True, exist_ok=True)
            partial = cache_to.with_name(f".{cache_to.name}.{os.getpid()}.{threading.get_ident()}")
        copied = 0
        with partial.open("wb") if partial else contextlib.nullcontext() as sink:
            while chunk := response.read(CHUNK_BYTES):
                self.wfile.write(chunk)
                if sink is not None:
                    sink.write(chunk)
                copied += len(chunk)
        if partial is not None and cache_to is not None:
            if copied == length:
                partial.rename(cache_to)
            else:
                partial.unlink(missing_ok=True)

    def do_CONNECT(self) -> None:
        host, _, port = self.path.rpartition(":")
        if host not in self.server.allowed_hosts or port != "443":
            self._deny(403, f"CONNECT {self.path}: only port 443 of a package registry")
            return
        try:
            upstream = socket.create_connection((host, 443), timeout=UPSTREAM_TIMEOUT_S)
        except OSError as exc:
            self._deny(502, f"cannot reach {host}: {exc}")
            return
        self.send_response_only(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        copied = _splice(self.connection, upstream)
        self._note("tunnel", 200, copied)


def _splice(client: socket.socket, upstream: socket.socket) -> int:
    """Copy bytes both ways until either side closes or stays silent for the upstream timeout."""
    copied = 0
    with upstream:
        pair = {client: upstream, upstream: client}
        while True:
            readable, _, _ = select.select(list(pair), [], [], UPSTREAM_TIMEOUT_S)
            if not readable:
                return copied
            for source in readable:
                data = source.recv(CHUNK_BYTES)
                if not data:
                    return copied
                pair[source].sendall(data)
                copied += len(data)


def _watch(server: RegistryProxy, netns_pid: int, parent_pid: int) -> None:
    """Stop serving once the container's leader or our parent (the test session) is gone."""
    while Path(f"/proc/{netns_pid}").exists() and os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL_S)
    server.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.infra.registry_proxy")
    parser.add_argument("--netns-pid", type=int, required=True, help="a process in the container")
    parser.add_argument("--host", default="127.0.0.1", help="address inside the container")
    parser.add_argument("--port", type=int, default=3142)
    parser.add_argument("--allow", action="append", default=[], help="an upstream host name")
    parser.add_argument("--cache-dir", type=Path, required=True, help="cached package files")
    args = parser.parse_args(argv)
    parent_pid = os.getppid()
    sock = listening_socket_in(args.netns_pid, args.host, args.port)
    server = RegistryProxy(sock, frozenset(args.allow), args.cache_dir)
    threading.Thread(target=_watch, args=(server, args.netns_pid, parent_pid), daemon=True).start()
    print(f"listening {args.host}:{args.port}", flush=True)
    server.serve_forever(poll_interval=WATCH_INTERVAL_S)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
