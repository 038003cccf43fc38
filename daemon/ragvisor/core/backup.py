"""What a backup of the embedded store is: its manifest, and the rules that decide whether a
backup folder is whole. Pure: no clock, no disk — the caller hashes the files and passes the
time in.

A backup folder holds the store's database (a consistent snapshot, see
`ragvisor.store.sqlite_backup`), the admin token and the configuration file in use, and
`manifest.json` describing them: which ragvisor wrote it, what the store held (schema version,
chunker versions, model generations and their vector counts) and the size and SHA-256 of every
file. The manifest carries a checksum of itself, so a flipped byte anywhere in the folder —
in a file or in the manifest — is found before a restore touches anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ragvisor.errors import StoreError

BACKUP_FORMAT = "ragvisor-backup/1"
MANIFEST_FILE = "manifest.json"
DATABASE_FILE = "ragvisor.sqlite3"  # the same name as in the data directory
TOKEN_FILE = "admin_token"  # noqa: S105 - a file name, not a secret
CONFIG_FILE = "config.toml"
# Files a restore puts into the data directory; the configuration stays in the backup for the
# operator to compare (Ansible, not a restore, owns /etc/ragvisor/ragvisor.toml).
RESTORED_FILES = (DATABASE_FILE, TOKEN_FILE)


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What the store held at the instant it was copied, read inside the copy's transaction."""

    schema_version: str
    commit_seq: int
    documents: int
    chunks: int
    vectors: Mapping[str, int] = field(default_factory=dict)  # fingerprint key -> vectors
    chunker_versions: tuple[str, ...] = ()
    generations: Mapping[str, Any] = field(default_factory=dict)  # the store's record, as JSON

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "schema_version": self.schema_version,
            "commit_seq": self.commit_seq,
            "documents": self.documents,
            "chunks": self.chunks,
            "vectors": dict(self.vectors),
            "chunker_versions": list(self.chunker_versions),
            "generations": dict(self.generations),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreFacts:
        """Back from :meth:`as_dict`. Raises KeyError, TypeError or ValueError when malformed."""
        return cls(
            schema_version=str(data["schema_version"]),
            commit_seq=int(data["commit_seq"]),
            documents=int(data["documents"]),
            chunks=int(data["chunks"]),
            vectors={str(k): int(v) for k, v in dict(data["vectors"]).items()},
            chunker_versions=tuple(str(v) for v in data["chunker_versions"]),
            generations=dict(data["generations"]),
        )

    def models(self) -> list[str]:
        """The generations' models as people read them: `name (fingerprint key)`, active first."""
        labels = []
        for role in ("active", "building"):
            record = self.generations.get(role)
            if isinstance(record, Mapping):
                name, key = record.get("model", ""), record.get("fingerprint", "")
                labels.append(f"{name} ({key})" + (", being built" if role == "building" else ""))
        return labels


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a backup: its name in the folder, size and SHA-256."""

    name: str
    size_bytes: int
    sha256: str

    def problem(self, size_bytes: int | None, sha256: str | None) -> str | None:
        """What is wrong with the file as found (None for a missing file), or None if whole."""
        if size_bytes is None or sha256 is None:
            return f"{self.name} is missing"
        if size_bytes != self.size_bytes:
            return f"{self.name} is {size_bytes} bytes, the manifest says {self.size_bytes}"
        if sha256 != self.sha256:
            return (
                f"{self.name} has SHA-256 {sha256[:16]}…, the manifest says {self.sha256[:16]}… "
                "(the file changed after the backup was written)"
            )
        return None


@dataclass(frozen=True, slots=True)
class Manifest:
    """`manifest.json`: what a backup holds and where it came from."""

    ragvisor_version: str
    created_at: str  # ISO 8601, UTC
    host: str
    data_dir: str
    config_path: str | None
    store: StoreFacts
    files: tuple[FileEntry, ...]
    seconds: float = 0.0  # how long writing the backup took

    def file(self, name: str) -> FileEntry | None:
        """The entry of `name`, or None when the backup has no such file."""
        return next((f for f in self.files if f.name == name), None)

    @property
    def size_bytes(self) -> int:
        """All files together."""
        return sum(f.size_bytes for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        """JSON shape, without the checksum (see :func:`manifest_json`)."""
        return {
            "format": BACKUP_FORMAT,
            "ragvisor_version": self.ragvisor_version,
            "created_at": self.created_at,
            "host": self.host,
            "source": {"data_dir": self.data_dir, "config": self.config_path},
            "store": {"backend": "sqlite", **self.store.as_dict()},
            "files": {f.name: {"size_bytes": f.size_bytes, "sha256": f.sha256} for f in self.files},
            "seconds": round(self.seconds, 3),
        }


def _checksum(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of everything but the checksum itself."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def manifest_json(manifest: Manifest) -> str:
    """The manifest as written: indented for people, with its checksum last."""
    body = manifest.as_dict()
    return json.dumps({**body, "checksum": _checksum(body)}, indent=2) + "\n"


def parse_manifest(text: str, where: str) -> Manifest:
    """The manifest in `text` (read from `where`, named in messages).

    Raises StoreError when it is not JSON, not a ragvisor backup of a format this version
    reads, or its checksum does not match its content (a byte changed since it was written).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{where} is damaged: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "format" not in data:
        raise StoreError(f"{where} is not a ragvisor backup manifest")
    if data["format"] != BACKUP_FORMAT:
        raise StoreError(
            f"{where} is a backup of format {data['format']!r}; this ragvisor reads "
            f"{BACKUP_FORMAT!r}"
        )
    claimed = data.pop("checksum", None)
    if claimed != _checksum(data):
        raise StoreError(f"{where} is damaged: its checksum does not match its content")
    if not isinstance(data.get("store"), dict) or data["store"].get("backend") != "sqlite":
        raise StoreError(f"{where} is not a backup of the SQLite store, the one ragvisor restores")
    try:
        source = data["source"]
        store = {k: v for k, v in data["store"].items() if k != "backend"}
        return Manifest(
            ragvisor_version=str(data["ragvisor_version"]),
            created_at=str(data["created_at"]),
            host=str(data["host"]),
            data_dir=str(source["data_dir"]),
            config_path=None if source["config"] is None else str(source["config"]),
            store=StoreFacts.from_dict(store),
            files=tuple(
                FileEntry(str(name), int(entry["size_bytes"]), str(entry["sha256"]))
                for name, entry in dict(data["files"]).items()
            ),
            seconds=float(data.get("seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{where} is not a manifest this ragvisor understands: {exc}") from exc


def check_manifest_files(manifest: Manifest, where: str) -> None:
    """The manifest lists the store's database and nothing a restore would not expect.

    Raises StoreError naming what is wrong: a backup without its database restores nothing,
    and a file name with a folder in it would write outside the restore's folder.
    """
    if manifest.file(DATABASE_FILE) is None:
        raise StoreError(f"{where} lists no {DATABASE_FILE}: it is not a backup of a store")
    for entry in manifest.files:
        if entry.name in ("", ".", "..") or "/" in entry.name or "\0" in entry.name:
            raise StoreError(f"{where} lists a file named {entry.name!r}, which is not allowed")
