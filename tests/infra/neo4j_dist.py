"""Neo4j's community server as a distribution archive, assembled from Maven Central only.

Why: the `neo4j` role installs from Neo4j's apt repository, which our machines (and air-gapped
hosts) cannot reach; its archive install path (`neo4j_install_method: archive`) needs a
`neo4j-community-<version>-unix.tar.gz` laid out like Neo4j's official one. Maven Central does
not carry that tarball, but it carries every jar of its `lib/`: the dependencies of
`org.neo4j.assembly:neo4j-community-standalone` (`tools/neo4j/server/pom.xml`). The bin scripts
are small POSIX sh scripts that run the same bootloader classes as the official ones
(`org.neo4j.server.startup.Neo4jBoot`, `Neo4jAdminBoot`), honouring NEO4J_HOME and NEO4J_CONF.

`build()` resolves the pinned jars with Maven and writes the archive once per machine into
`$RAGVISOR_CACHE/neo4j-dist/<version>/` (a half-built folder is never used: it is assembled
beside the cache and renamed into place). The archive is reproducible — entries sorted, owner
root, one fixed mtime, gzip without a timestamp — so the same pins give the same sha256 on
every machine, and an operator can pin `neo4j_archive_sha256` once.

Command line (what `make neo4j-dist` calls): `python -m tests.infra.neo4j_dist build` prints the
archive's path and sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from tests.infra.engine_steps import EngineError, cache_root, publish_build, run_step

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "tools" / "neo4j" / "server"
NEO4J_VERSION = "5.26.30"  # as in tools/neo4j/server/pom.xml
TOP = f"neo4j-community-{NEO4J_VERSION}"
ARCHIVE_NAME = f"{TOP}-unix.tar.gz"
# The bin scripts and the bootloader class each one runs (as in Neo4j's own distribution).
SCRIPTS = {
    "neo4j": "org.neo4j.server.startup.Neo4jBoot",
    "neo4j-admin": "org.neo4j.server.startup.Neo4jAdminBoot",
}
# Empty folders of the official layout; Neo4j writes into them relative to NEO4J_HOME.
EMPTY_DIRS = ("data", "logs", "plugins", "import", "run", "licenses")
# Every entry's mtime: 2024-01-01T00:00:00Z, so the archive's bytes depend on the pins only.
FIXED_MTIME = 1_704_067_200
RESOLVE_TIMEOUT_S = 900.0


def cache_dir() -> Path:
    """`$RAGVISOR_CACHE/neo4j-dist/<version>` (default under `~/.cache/ragvisor`)."""
    return cache_root() / "neo4j-dist" / NEO4J_VERSION


def archive_path() -> Path:
    """Where `build()` leaves the archive."""
    return cache_dir() / ARCHIVE_NAME


def _recipe_stamp() -> str:
    """What the cached archive was built from: this module and the recipe's files."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(RECIPE.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def script_text(name: str) -> str:
    """bin/`name`: the launcher template with its name and bootloader class filled in."""
    template = (RECIPE / "launcher.sh").read_text()
    return template.replace("@NAME@", name).replace("@CLASS@", SCRIPTS[name])


def _readme() -> str:
    return (
        f"Neo4j {NEO4J_VERSION} community server, assembled by ragvisor from Maven Central\n"
        "(org.neo4j.assembly:neo4j-community-standalone's runtime dependencies in lib/).\n"
        "Neo4j is licensed under the GPL v3; each jar's licence is in its META-INF.\n"
        "Start: bin/neo4j console (foreground) or bin/neo4j start; admin: bin/neo4j-admin.\n"
    )


def _entry(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"{TOP}/{name}" if name else TOP)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_archive(lib: Path, dest: Path) -> None:
    """Pack the jars under `lib` with the scripts, conf and empty folders into `dest`."""
    files: dict[str, tuple[bytes, int]] = {
        "conf/neo4j.conf": ((RECIPE / "neo4j.conf").read_bytes(), 0o644),
        "README.txt": (_readme().encode(), 0o644),
    }
    for name in SCRIPTS:
        files[f"bin/{name}"] = (script_text(name).encode(), 0o755)
    jars = sorted(lib.glob("*.jar"))
    if not jars:
        raise EngineError(f"no jars under {lib}: Maven resolved nothing")
    dirs = sorted({"", "bin", "conf", "lib", *EMPTY_DIRS})
    with (
        dest.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for folder in dirs:
            tar.addfile(_entry(folder, tarfile.DIRTYPE, 0o755))
        for name, (data, mode) in sorted(files.items()):
            tar.addfile(_entry(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
        for jar in jars:
            with jar.open("rb") as stream:
                info = _entry(f"lib/{jar.name}", tarfile.REGTYPE, 0o644, jar.stat().st_size)
                tar.addfile(info, stream)


def assert_only_password_opens(uri: str, password: str) -> None:
    """The promise of an initial password: the driver gets in with it, and Neo4j's default
    neo4j/neo4j is refused (what the archive's console and the role's install both owe)."""
    import neo4j  # noqa: PLC0415 - the driver only where a server runs

    with neo4j.GraphDatabase.driver(uri, auth=("neo4j", password)) as driver:
        records, _, _ = driver.execute_query("RETURN 40 + 2 AS answer")
    assert records[0]["answer"] == 42
    with neo4j.GraphDatabase.driver(uri, auth=("neo4j", "neo4j")) as driver:
        try:
            driver.verify_connectivity()
        except neo4j.exceptions.AuthError:
            return
    raise AssertionError(f"{uri} let neo4j/neo4j in: the initial password was not set")


def missing_tools() -> list[str]:
    """The programs `build` needs that this machine lacks."""
    return [tool for tool in ("mvn", "java") if shutil.which(tool) is None]


def build() -> Path:
    """The cached archive, built on first use. Raises EngineError saying why not."""
    root = cache_dir()
    stamp = _recipe_stamp()
    stamp_file = root / "stamp"
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp and archive_path().exists():
        return archive_path()
    missing = missing_tools()
    if missing:
        raise EngineError(f"cannot build the Neo4j archive: {', '.join(missing)} not on PATH")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{NEO4J_VERSION}-", dir=root.parent))
    work.chmod(0o755)  # readable by whoever installs from it, like the rest of the cache
    try:
        run_step(
            [
                "mvn", "-q", "-B", "-f", str(RECIPE / "pom.xml"),
                "dependency:copy-dependencies", "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'lib'}",
            ],
            RESOLVE_TIMEOUT_S,
            f"resolving Neo4j {NEO4J_VERSION}'s server jars from Maven",
        )  # fmt: skip
        write_archive(work / "lib", work / ARCHIVE_NAME)
        shutil.rmtree(work / "lib")
        publish_build(work, root, stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return archive_path()


def main(argv: list[str] | None = None) -> int:
    """`build`: print the archive's path and sha256; exit 1 with the reason when it fails."""
    parser = argparse.ArgumentParser(prog="python -m tests.infra.neo4j_dist")
    parser.add_argument("command", choices=["build"])
    parser.parse_args(argv)
    try:
        archive = build()
    except EngineError as exc:
        print(f"neo4j-dist: {exc}", file=sys.stderr)
        return 1
    print(archive)
    print(f"sha256 {sha256_of(archive)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
