"""A real Ollama for development and tests, built from its published Go module — not an imitation.

Why: "restarts hung Ollama calls" is why ragvisor exists, and a supervisor proven only against
its own stand-in is not proven. Ollama is a Go module whose CPU backend (ggml) compiles through
cgo, so it is built here from the Go module proxy at a pinned version, once per machine.

The pieces:

- `build()` makes `$RAGVISOR_CACHE/ollama/<version>` (outside the clone; a half-built tree is
  never used — it is assembled beside the cache and renamed into place):
  1. the C/C++ headers llama.cpp vendors (nlohmann/json, miniaudio, stb_image). A Go module zip
     drops every `vendor/` folder, so they come from the llama.cpp tree inside the pinned
     llama-cpp-python sdist (the same release `make install` compiles), checked by sha256;
  2. `go install github.com/ollama/ollama@v<version>` with cgo, tuned for this CPU
     (`-march=native`: the cache belongs to this machine) — 10-20 minutes on 2 cores;
  3. the models, from files we pin, never from a registry: the chat model from the pinned
     Gemma 3 270M GGUF, the embedding model from MiniLM's fp32 weights converted to GGUF by
     `tools/ollama/minilm_gguf.py` (pinned by the sha256 of the result), each imported with
     `ollama create NAME -f Modelfile` into the cache's models folder.
- `Server` runs `ollama serve` on a loopback port in a session of its own, with the environment
  `inventory/prod` gives the `ollama` role, its pid in a file — so a restart command (what
  `systemctl restart ollama` is in production) can stop it and start another, as the daemon's
  ladder does in the tests.

Command line (what `make` calls): `python -m tests.infra.ollama_engine build`; `start` (a server
on a free port with its state under `.ollama/`, printing the settings that point the daemon at
it), `stop`, and `restart --dir DIR` (stop the server started from DIR and start it again on
the same port: the tests' `restart_command`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from ragvisor.core.hashing import file_sha256
from tests.infra.engine_steps import EngineError, cache_root, free_port, publish_build, run_step

REPO = Path(__file__).resolve().parents[2]
OLLAMA_VERSION = "0.17.4"
MODULE = "github.com/ollama/ollama"
# llama.cpp's vendored headers, from the llama-cpp-python release `make install` builds.
LLAMA_SDIST = "llama_cpp_python-0.3.36.tar.gz"
LLAMA_SDIST_REQUIREMENT = "llama-cpp-python==0.3.36"
LLAMA_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDORED = ("nlohmann", "miniaudio", "stb")
CONVERTER = REPO / "tools" / "ollama" / "minilm_gguf.py"
MINILM_GGUF_SHA256 = "a11adb575c00db632a4e82b78ec98e980fef47ad7ea554895d0dc07211281ea9"
CHAT_MODEL = "gemma3-270m"
EMBED_MODEL = "all-minilm"
PROD_VARS = REPO / "inventory" / "prod" / "group_vars" / "ragvisor.yml"
DEFAULT_DIR = REPO / ".ollama"

# Every wait is bounded; generous on a loaded 2-core box.
DOWNLOAD_TIMEOUT_S = 600.0
COMPILE_TIMEOUT_S = 2700.0
CREATE_TIMEOUT_S = 300.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def cache_dir() -> Path:
    """`$RAGVISOR_CACHE/ollama/<version>` (default under `~/.cache/ragvisor`): outside the clone."""
    return cache_root() / "ollama" / OLLAMA_VERSION


def binary(root: Path | None = None) -> Path:
    """The `ollama` executable in the cache."""
    return (root or cache_dir()) / "bin" / "ollama"


def models_dir(root: Path | None = None) -> Path:
    """`OLLAMA_MODELS` of every server started from the cache: the imported models."""
    return (root or cache_dir()) / "models"


def _recipe_stamp() -> str:
    """What the cached tree was built from: the versions, the pins and the converter."""
    digest = hashlib.sha256()
    for part in (OLLAMA_VERSION, LLAMA_SDIST_SHA256, MINILM_GGUF_SHA256, CHAT_MODEL, EMBED_MODEL):
        digest.update(part.encode())
    digest.update(CONVERTER.read_bytes())
    return digest.hexdigest()[:16]


def missing_tools() -> list[str]:
    """The programs `build` needs that this machine lacks."""
    return [tool for tool in ("go", "gcc", "g++") if shutil.which(tool) is None]


def build(progress: bool = False) -> Path:
    """The cached Ollama and its models, built on first use. Raises EngineError saying why not."""
    root = cache_dir()
    stamp = _recipe_stamp()
    if (root / "stamp").exists() and (root / "stamp").read_text().strip() == stamp:
        return root
    missing = missing_tools()
    if missing:
        raise EngineError(f"cannot build Ollama: {', '.join(missing)} not found on PATH")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{OLLAMA_VERSION}-", dir=root.parent))
    say = print if progress else (lambda *_: None)
    try:
        started = time.monotonic()
        say(f"ollama {OLLAMA_VERSION}: llama.cpp's vendored headers from {LLAMA_SDIST}")
        headers = _vendored_headers(root.parent / f"vendor-{LLAMA_SDIST_SHA256[:12]}")
        say(f"ollama {OLLAMA_VERSION}: go install {MODULE}@v{OLLAMA_VERSION} (10-20 minutes)")
        _compile(work, headers)
        say(f"ollama {OLLAMA_VERSION}: compiled in {time.monotonic() - started:.0f} s")
        say(f"ollama {OLLAMA_VERSION}: importing {CHAT_MODEL} and {EMBED_MODEL}")
        _import_models(work)
        publish_build(work, root, stamp)
        say(f"ollama {OLLAMA_VERSION}: ready in {time.monotonic() - started:.0f} s at {root}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def _vendored_headers(target: Path) -> Path:
    """nlohmann/json, miniaudio and stb from the pinned sdist's `vendor/llama.cpp/vendor/`, in
    a folder named for the sdist's hash: a stable path keeps Go's build cache valid across
    rebuilds (the include path is part of each cgo package's cache key)."""
    if (target / "complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    downloads = target.parent / f"{target.name}.sdist"
    run_step(
        [
            sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
            "-d", str(downloads), LLAMA_SDIST_REQUIREMENT,
        ],
        DOWNLOAD_TIMEOUT_S,
        f"downloading {LLAMA_SDIST_REQUIREMENT} (the source of llama.cpp's vendored headers)",
    )  # fmt: skip
    sdist = downloads / LLAMA_SDIST
    digest = file_sha256(sdist)
    if digest != LLAMA_SDIST_SHA256:
        raise EngineError(f"{sdist} has sha256 {digest}, expected {LLAMA_SDIST_SHA256}")
    prefix = f"{LLAMA_SDIST.removesuffix('.tar.gz')}/vendor/llama.cpp/vendor/"
    with tarfile.open(sdist) as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.isfile()
            and member.name.startswith(prefix)
            and member.name[len(prefix) :].split("/", 1)[0] in VENDORED
        ]
        for member in members:
            member.name = member.name[len(prefix) :]
        archive.extractall(target, members=members, filter="data")
    shutil.rmtree(downloads)
    (target / "complete").touch()
    return target


def _compile(work: Path, headers: Path) -> None:
    """`go install` the pinned release into `work/bin` (cgo; CPU only)."""
    flags = "-O3 -march=native"
    env = {
        **os.environ,
        "GOBIN": str(work / "bin"),
        "CGO_ENABLED": "1",
        "CGO_CPPFLAGS": f"-I{headers}",
        "CGO_CFLAGS": flags,
        "CGO_CXXFLAGS": flags,
    }
    run_step(
        [
            "go", "install", "-trimpath",
            f"-ldflags=-X={MODULE}/version.Version={OLLAMA_VERSION}",
            f"{MODULE}@v{OLLAMA_VERSION}",
        ],
        COMPILE_TIMEOUT_S,
        f"go install {MODULE}@v{OLLAMA_VERSION}",
        env,
    )  # fmt: skip


def _import_models(work: Path) -> None:
    """Both models into `work/models`, through a server of the new binary and `ollama create`."""
    from ragvisor.llm.gguf import cache_dir as gguf_cache  # noqa: PLC0415 - after install
    from ragvisor.llm.gguf import ensure_default_gguf  # noqa: PLC0415

    sources = work / "gguf"
    sources.mkdir()
    minilm = sources / f"{EMBED_MODEL}.gguf"
    run_step(
        [sys.executable, str(CONVERTER), str(minilm)],
        CREATE_TIMEOUT_S,
        f"converting MiniLM to GGUF ({CONVERTER.name})",
    )
    digest = file_sha256(minilm)
    if digest != MINILM_GGUF_SHA256:
        raise EngineError(f"{minilm} has sha256 {digest}, expected {MINILM_GGUF_SHA256}")
    gemma = ensure_default_gguf(gguf_cache())
    # The GGUF carries no chat template Ollama recognises: give it the one Ollama itself ships
    # for Gemma 3 (template/gemma3-instruct.gotmpl in the module just compiled).
    template = _module_file("template/gemma3-instruct.gotmpl").read_text()
    modelfiles = {
        CHAT_MODEL: f'FROM {gemma}\nTEMPLATE """{template}"""\nPARAMETER stop "<end_of_turn>"\n',
        EMBED_MODEL: f"FROM {minilm}\n",
    }
    server = Server(work / "import", free_port(), root=work)
    server.start()
    try:
        for name, text in modelfiles.items():
            modelfile = sources / f"{name}.Modelfile"
            modelfile.write_text(text)
            run_step(
                [str(binary(work)), "create", name, "-f", str(modelfile)],
                CREATE_TIMEOUT_S,
                f"ollama create {name} -f {modelfile}",
                {**os.environ, "OLLAMA_HOST": server.host},
            )
    finally:
        server.stop()
    shutil.rmtree(sources)
    shutil.rmtree(work / "import")


def _module_file(relative: str) -> Path:
    """A file of the pinned module's source, as `go install` left it in the module cache."""
    done = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip()) / f"{MODULE}@v{OLLAMA_VERSION}" / relative


def prod_environment() -> dict[str, str]:
    """`ollama_env` as `inventory/prod` gives it to the `ollama` role (OLLAMA_HOST aside)."""
    values = yaml.safe_load(PROD_VARS.read_text())
    return {k: str(v) for k, v in values["ollama_env"].items() if k != "OLLAMA_HOST"}


@dataclass
class Server:
    """One `ollama serve`: its folder (log, pid, environment), its port and its binary's tree.

    The server runs in a session of its own and is found again through `home/ollama.pid`, so
    `restart` works from any process — the daemon's ladder runs it as `restart_command`.
    """

    home: Path
    port: int
    root: Path | None = None
    extra_env: dict[str, str] | None = None
    # A file shown to Ollama as /proc/meminfo (a mount namespace of its own): the memory a
    # small box has, so a load is refused for memory by Ollama's own check.
    meminfo: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def host(self) -> str:
        """`OLLAMA_HOST`: where it listens."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of its API."""
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        """Ollama's own log (the server's and its runners' lines)."""
        return self.home / "ollama.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "ollama.pid"

    def environment(self) -> dict[str, str]:
        """The server's environment: inventory/prod's, its port, the cached models, CPU only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
        env.update(prod_environment())
        env.update(
            OLLAMA_HOST=self.host,
            OLLAMA_MODELS=str(models_dir(self.root)),
            OLLAMA_NOPRUNE="1",  # never delete an imported blob it does not recognise
            CUDA_VISIBLE_DEVICES="",
        )
        env.update(self.extra_env or {})
        return env

    @property
    def pid(self) -> int | None:
        """The running server's pid, or None."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> Server:
        """Start it and wait (bounded) until `/api/version` answers; remembers how, for restart."""
        root = self.root or cache_dir()
        if self.root is None:
            build()
        if self.process is not None:
            self.process.poll()  # collect a server that died (killed, say) before replacing it
        self.home.mkdir(parents=True, exist_ok=True)
        saved = {
            "port": self.port,
            "root": str(root),
            "extra_env": self.extra_env or {},
            "meminfo": str(self.meminfo) if self.meminfo else None,
        }
        (self.home / "server.json").write_text(json.dumps(saved))
        argv = [str(binary(root)), "serve"]
        if self.meminfo is not None:
            mount = 'mount --bind "$0" /proc/meminfo && exec "$@"'
            argv = ["unshare", "--mount", "sh", "-c", mount, str(self.meminfo), *argv]
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.process = process  # kept, so that it is reaped when it stops
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EngineError(f"ollama serve exited ({process.returncode}):\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/version", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise EngineError(f"ollama serve not answering in {START_TIMEOUT_S:g} s:\n{self.tail()}")

    @classmethod
    def from_folder(cls, home: Path) -> Server:
        """The server last started from `home`, as it was started."""
        saved = json.loads((home / "server.json").read_text())
        meminfo = Path(saved["meminfo"]) if saved.get("meminfo") else None
        return cls(
            home, int(saved["port"]), Path(saved["root"]), saved["extra_env"] or None, meminfo
        )

    def stop(self) -> bool:
        """SIGTERM the server and its runners, SIGKILL what is left after STOP_TIMEOUT_S (a
        frozen runner ignores SIGTERM until it is continued). False when none was running."""
        pid = self.pid
        if pid is None:
            if self.process is not None:
                self.process.poll()  # collect it if it died on its own
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)  # a frozen runner would never see the TERM
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if self.process is not None and self.process.pid == pid:
            self.process.wait(STOP_TIMEOUT_S)
        else:
            _reap(pid)
            if self.process is not None:
                self.process.poll()  # ours, replaced by a restart from elsewhere: collect it
        self.pid_file.unlink(missing_ok=True)
        return True

    def restart(self) -> Server:
        """Stop and start again on the same port (what `systemctl restart ollama` does)."""
        self.stop()
        return self.start()

    def runner_pids(self) -> list[int]:
        """The `ollama runner` children: one per loaded model."""
        pid = self.pid
        if pid is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = next(
                (int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid")),
                0,
            )
            if ppid == pid and b"runner" in cmdline:
                found.append(int(entry.name))
        return sorted(found)

    def restart_command(self) -> list[str]:
        """The argv the daemon's ladder runs to restart this server."""
        module = ["-m", "tests.infra.ollama_engine", "restart", "--dir", str(self.home)]
        return ["env", f"PYTHONPATH={REPO}", sys.executable, *module]

    def daemon_env(self, *, embedder: bool = False) -> dict[str, str]:
        """The environment that points a daemon's generator (and, with `embedder`, its
        embedder) at this server, the ladder restarting it."""
        restart = json.dumps(self.restart_command())
        env = {
            "RAGVISOR_GENERATOR__BACKEND": "ollama",
            "RAGVISOR_GENERATOR__URL": self.url,
            "RAGVISOR_GENERATOR__MODEL": CHAT_MODEL,
            "RAGVISOR_GENERATOR__LADDER__RESTART_COMMAND": restart,
        }
        if embedder:
            env |= {
                "RAGVISOR_EMBEDDER__BACKEND": "ollama",
                "RAGVISOR_EMBEDDER__URL": self.url,
                "RAGVISOR_EMBEDDER__MODEL": EMBED_MODEL,
                "RAGVISOR_EMBEDDER__LADDER__RESTART_COMMAND": restart,
            }
        return env

    def tail(self) -> str:
        """The end of its log."""
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def small_box_meminfo(path: Path, total_mb: int, available_mb: int) -> Path:
    """Write a /proc/meminfo of a box with `total_mb` of RAM, `available_mb` of it available
    and no swap, for `Server.meminfo`."""
    values = {
        "MemTotal": total_mb * 1024,
        "MemFree": available_mb * 1024,
        "MemAvailable": available_mb * 1024,
        "Buffers": 0,
        "Cached": 0,
        "SwapCached": 0,
        "SwapTotal": 0,
        "SwapFree": 0,
    }
    path.write_text("".join(f"{key}:{value:>16} kB\n" for key, value in values.items()))
    return path


def _alive(pid: int) -> bool:
    """Running and not a zombie (a server we started and nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in the process group."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _in_group(proc, pgid) and _alive(int(proc.name)):
            return True
    return False


def _in_group(proc: Path, pgid: int) -> bool:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid
    except (OSError, IndexError, ValueError):
        return False


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# --- command line (`make ollama`, `make ollama-stop`, the tests' restart_command) -------------


def settings_lines(server: Server) -> list[str]:
    """The ragvisor.toml sections that point the daemon at `server`."""
    return [
        "[generator]",
        'backend = "ollama"',
        f'url = "{server.url}"',
        f'model = "{CHAT_MODEL}"',
        "",
        "[embedder]   # optional: embeddings from Ollama instead of the in-process ONNX model",
        'backend = "ollama"',
        f'url = "{server.url}"',
        f'model = "{EMBED_MODEL}"',
    ]


def start_detached(home: Path, port: int) -> Server:
    """A server for development under `home`, left running (`make ollama`)."""
    if (home / "server.json").exists() and Server.from_folder(home).pid is not None:
        raise EngineError(f"an Ollama started from {home} is running; `make ollama-stop` first")
    return Server(home, port or free_port()).start()


def main(argv: list[str] | None = None) -> int:
    """`build`, `start`, `stop` or `restart`; exit 1 with the reason when a step fails."""
    parser = argparse.ArgumentParser(prog="python -m tests.infra.ollama_engine")
    parser.add_argument("command", choices=["build", "start", "stop", "restart"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="log, pid, settings")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = parser.parse_args(argv)
    home = args.dir.resolve()
    try:
        if args.command == "build" and missing_tools():
            # A machine without Go cannot build it: the tests that need it skip, saying why.
            print(f"ollama: not built, {', '.join(missing_tools())} not found on PATH")
        elif args.command == "build":
            print(f"ollama {OLLAMA_VERSION}: {build(progress=True)}")
        elif args.command == "start":
            server = start_detached(home, args.port)
            print(f"ollama {OLLAMA_VERSION} is serving on {server.url} (log: {server.log_path})")
            print("Point the daemon at it (ragvisor.toml):\n")
            print("\n".join(settings_lines(server)))
        elif args.command == "restart":
            server = Server.from_folder(home).restart()
            print(f"ollama restarted on {server.url}")
        else:
            stopped = (home / "server.json").exists() and Server.from_folder(home).stop()
            print("ollama stopped" if stopped else "ollama was not running")
    except EngineError as exc:
        print(f"ollama: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
