"""What an air-gapped host is handed for Ollama: a release archive and pinned model files.

Why: the `ollama` role installs Ollama the way its releases ship it — download an archive,
verify it against a pinned checksum, unpack `bin/ollama` and `lib/ollama/` into a versioned
directory, point `/usr/local/bin/ollama` at it — and creates models from local GGUF files. A
test of that path needs an archive laid out like Ollama's own, holding the Ollama we run
everywhere else: the one `tests/infra/ollama_engine.py` builds from its Go module.

The archive, as Ollama's release workflow makes it (`.github/workflows/release.yaml` at v0.17.4:
`tar c -C dist/linux-amd64 -T list --owner 0 --group 0 | zstd`; `scripts/build_linux.sh` before
0.14: `tar c ... bin lib | pigz -9`):

- named `ollama-linux-<arch>.tgz` up to 0.13 and `ollama-linux-<arch>.tar.zst` from 0.14;
- members `bin/ollama` and `lib/ollama/...`, owned by 0:0, no leading `./`;
- beside it `sha256sum.txt`, one `<hex>  ./<asset>` line per asset (`find . -type f | xargs
  sha256sum`).

What differs from the published asset, and why it does not matter to the role: `lib/ollama/` is
an empty directory — our cgo build compiles ggml's CPU backend into the binary, so there are no
`libggml-*.so` runner libraries and no CUDA/ROCm/Vulkan/MLX ones; the binary is built with
`-march=native` (it runs on CPUs like this one) and is not stripped (~50 MB instead of ~35);
zstd runs at its default level, not `--ultra -22` (seconds instead of minutes, a larger file).
Ollama finds `lib/ollama` relative to its resolved executable, so the role's versioned layout is
exercised exactly as with a real release.

Models: `gemma3-270m` (the pinned Gemma 3 270M GGUF, Ollama's own `gemma3-instruct` template,
`PARAMETER stop "<end_of_turn>"`) and `all-minilm` (MiniLM converted by
`tools/ollama/minilm_gguf.py`, pinned by the result's sha256) — the same two models
`ollama_engine` imports — as entries of the role's `ollama_local_models`.

Everything lands in `$RAGVISOR_CACHE/ollama/release/<version>/` and `$RAGVISOR_CACHE/ollama/gguf/`,
rebuilt only when the source binary (or a model file) changes.

Command line: `python -m tests.infra.ollama_archive build` prints the archive's path and sha256
(`--json`: also the role variables for it and for the two models).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ragvisor.core.hashing import file_sha256
from tests.infra import ollama_engine
from tests.infra.engine_steps import EngineError, cache_root, run_step

# The first release whose Linux asset is a .tar.zst (0.13.5 still shipped a .tgz).
FIRST_ZSTD_RELEASE = (0, 14)
# Bump when the archive's recipe changes: a cached archive of another recipe is rebuilt.
RECIPE = "2"
ZSTD_TIMEOUT_S = 300.0
CONVERT_TIMEOUT_S = 300.0
GEMMA_TEMPLATE = "template/gemma3-instruct.gotmpl"
GEMMA_STOP = "<end_of_turn>"


def release_version(version: str) -> tuple[int, ...]:
    """`0.17.4` (or `v0.17.4`, `0.14.0-rc1`) as numbers, for comparing releases.

    Raises ValueError when the text does not start with a dotted number.
    """
    match = re.match(r"v?(\d+(?:\.\d+)*)", version)
    if match is None:
        raise ValueError(f"not an Ollama version: {version!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def asset_name(version: str, arch: str = "amd64") -> str:
    """The Linux release asset's file name for `version`: `.tgz` up to 0.13, `.tar.zst` after."""
    zstd = release_version(version)[:2] >= FIRST_ZSTD_RELEASE
    return f"ollama-linux-{arch}.{'tar.zst' if zstd else 'tgz'}"


def release_dir(version: str = ollama_engine.OLLAMA_VERSION) -> Path:
    """`$RAGVISOR_CACHE/ollama/release/<version>`: the archive and its `sha256sum.txt`."""
    return cache_root() / "ollama" / "release" / version


def gguf_dir() -> Path:
    """`$RAGVISOR_CACHE/ollama/gguf`: model files for `ollama create` (any Ollama version)."""
    return cache_root() / "ollama" / "gguf"


@dataclass(frozen=True)
class ReleaseArchive:
    """A release archive on disk and its sha256, as the role's variables take them."""

    version: str
    path: Path
    sha256: str

    @property
    def checksum(self) -> str:
        """`ollama_archive_checksum`: the pinned digest, as `sha256:<hex>`."""
        return f"sha256:{self.sha256}"

    @property
    def sha256sum_file(self) -> Path:
        """The `sha256sum.txt` beside the archive (the release's format)."""
        return self.path.parent / "sha256sum.txt"

    def role_vars(self, *, url: str | None = None) -> dict[str, str]:
        """The `ollama` role's variables that install this archive: copied from the control
        machine (`ollama_archive_src`), or fetched from `url` on the host (e.g. a `file://`
        URL of a bind-mounted copy) when given."""
        source = {"ollama_archive_url": url} if url else {"ollama_archive_src": str(self.path)}
        return {"ollama_version": self.version, "ollama_archive_checksum": self.checksum, **source}


@dataclass(frozen=True)
class LocalModel:
    """One entry of the role's `ollama_local_models`: a GGUF file pinned by its sha256, and
    the file of its chat template (Go template text: a file, so Ansible never renders it)."""

    name: str
    gguf: Path
    sha256: str
    template_src: Path | None = None
    parameters: dict[str, list[str]] = field(default_factory=dict)

    def role_entry(self, *, gguf: str | None = None, remote_src: bool = False) -> dict[str, Any]:
        """The entry for `ollama_local_models`; `gguf` overrides the path (where the host sees
        the file, with `remote_src`)."""
        entry: dict[str, Any] = {
            "name": self.name,
            "gguf": gguf or str(self.gguf),
            "sha256": self.sha256,
        }
        if remote_src:
            entry["remote_src"] = True
        if self.template_src is not None:
            entry["template_src"] = str(self.template_src)
        if self.parameters:
            entry["parameters"] = self.parameters
        return entry


def build(progress: bool = False) -> ReleaseArchive:
    """The release archive of the source-built Ollama, made on first use (and after a rebuild
    of the binary). Raises EngineError when Ollama cannot be built or zstd is missing."""
    say = print if progress else (lambda *_: None)
    root = ollama_engine.build(progress=progress)
    binary = ollama_engine.binary(root)
    version = ollama_engine.OLLAMA_VERSION
    target = release_dir(version)
    name = asset_name(version)
    archive = target / name
    binary_sha256 = file_sha256(binary)
    stamp = f"recipe={RECIPE} binary={binary_sha256}\n"
    stamp_file = target / "source.stamp"
    if archive.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return ReleaseArchive(version, archive, _listed_sha256(target / "sha256sum.txt", name))
    target.mkdir(parents=True, exist_ok=True)
    say(f"ollama {version}: packing {binary} as {archive}")
    with _replacing(archive) as partial:
        write_archive(partial, binary, zstd=name.endswith(".tar.zst"))
    digest = file_sha256(archive)
    (target / "sha256sum.txt").write_text(f"{digest}  ./{name}\n")
    stamp_file.write_text(stamp)
    return ReleaseArchive(version, archive, digest)


def write_archive(dest: Path, binary: Path, *, zstd: bool) -> None:
    """`bin/ollama` and an empty `lib/ollama/` into `dest` (.tar.zst or .tgz), owned by 0:0,
    stamped with the binary's mtime so the same binary gives the same archive."""
    mtime = int(binary.stat().st_mtime)
    if not zstd:
        with dest.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as gz:
            _write_members(gz, binary, mtime)
        return
    if shutil.which("zstd") is None:
        raise EngineError("zstd not found on PATH (Debian: apt-get install zstd)")
    with dest.open("wb") as out, tempfile.TemporaryFile() as errors:
        zstd_process = subprocess.Popen(
            ["zstd", "-q", "-T0", "-c"], stdin=subprocess.PIPE, stdout=out, stderr=errors
        )
        assert zstd_process.stdin is not None
        try:
            _write_members(zstd_process.stdin, binary, mtime)
        finally:
            zstd_process.stdin.close()
            returncode = zstd_process.wait(timeout=ZSTD_TIMEOUT_S)
        errors.seek(0)
        if returncode != 0:
            raise EngineError(f"zstd failed (exit {returncode}): {errors.read().decode()}")


def _write_members(stream: IO[bytes] | gzip.GzipFile, binary: Path, mtime: int) -> None:
    """The tar stream: the release's two top-level entries, in the release's order."""
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        executable = _member("bin/ollama", tarfile.REGTYPE, mtime, binary.stat().st_size)
        with binary.open("rb") as source:
            tar.addfile(executable, source)
        tar.addfile(_member("lib/ollama", tarfile.DIRTYPE, mtime, 0), io.BytesIO(b""))


def _member(name: str, kind: bytes, mtime: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = mtime
    info.size = size
    return info


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A scratch file beside `path`, renamed over it (readable by all, as a download would be)
    only when the block succeeds."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        partial.chmod(0o644)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)


def _listed_sha256(sha256sum_txt: Path, name: str) -> str:
    """The digest `sha256sum.txt` lists for `./name`. Raises EngineError when it is missing."""
    for line in sha256sum_txt.read_text().splitlines():
        digest, _, listed = line.partition("  ")
        if listed in {name, f"./{name}"}:
            return digest
    raise EngineError(f"{sha256sum_txt} lists no {name}")


# --- the models, from pinned files -----------------------------------------------------------


def local_models() -> list[LocalModel]:
    """`gemma3-270m` and `all-minilm` as `ollama_local_models` entries, their files made (and
    checked against their pins) on first use. Raises EngineError when a file cannot be made."""
    return [_gemma(), _minilm()]


def _gemma() -> LocalModel:
    from ragvisor.llm import gguf  # noqa: PLC0415 - needs the installed package, as ollama_engine

    template_file = gguf_dir() / "gemma3-instruct.gotmpl"
    if not template_file.exists():
        # Ollama's own Gemma 3 chat template, from the module `ollama_engine` compiled.
        template_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ollama_engine._module_file(GEMMA_TEMPLATE), template_file)
    return LocalModel(
        name=ollama_engine.CHAT_MODEL,
        gguf=gguf.ensure_default_gguf(gguf.cache_dir()),
        sha256=gguf.DEFAULT_GGUF_SHA256,
        template_src=template_file,
        parameters={"stop": [GEMMA_STOP]},
    )


def _minilm() -> LocalModel:
    target = gguf_dir() / f"{ollama_engine.EMBED_MODEL}.gguf"
    pinned = ollama_engine.MINILM_GGUF_SHA256
    if not target.exists() or file_sha256(target) != pinned:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _replacing(target) as partial:
            run_step(
                [sys.executable, str(ollama_engine.CONVERTER), str(partial)],
                CONVERT_TIMEOUT_S,
                f"converting MiniLM to GGUF ({ollama_engine.CONVERTER.name})",
            )
            digest = file_sha256(partial)
            if digest != pinned:
                raise EngineError(f"{partial} has sha256 {digest}, expected {pinned}")
    return LocalModel(name=ollama_engine.EMBED_MODEL, gguf=target, sha256=pinned)


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`build`: print the archive's path and sha256 (`--json`: with the role's variables)."""
    parser = argparse.ArgumentParser(prog="python -m tests.infra.ollama_archive")
    parser.add_argument("command", choices=["build"])
    parser.add_argument(
        "--json", action="store_true", help="path, sha256 and the role variables as JSON"
    )
    args = parser.parse_args(argv)
    try:
        archive = build(progress=not args.json)
        if args.json:
            models = [model.role_entry() for model in local_models()]
            report = {
                "path": str(archive.path),
                "sha256": archive.sha256,
                "sha256sum_txt": str(archive.sha256sum_file),
                "role_vars": {**archive.role_vars(), "ollama_local_models": models},
            }
            print(json.dumps(report, indent=2))
        else:
            print(f"{archive.path}\nsha256:{archive.sha256}")
    except EngineError as exc:
        print(f"ollama archive: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
