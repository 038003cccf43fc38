"""The admin bearer token: `server.admin_token`, or one kept in `<data_dir>/admin_token`.

It fails closed. A token is only ever a run of at least `MIN_TOKEN_CHARS` printable ASCII
characters without whitespace, so no header a client can send — `Bearer` alone, spaces — ever
matches an empty or blank one. A configured token that breaks the rule is refused with a
ConfigError naming `server.admin_token`. For the file:

- missing: a random token is generated into it (`admin_token.generated`);
- empty or only whitespace — a crash between creating and writing it under an older ragvisor,
  or an operator emptying it — it holds no token anyone could be using, so a new one replaces
  it (`admin_token.regenerated`, a warning naming the file);
- holding a token that breaks the rule (too short, non-ASCII, spaces inside): someone wrote it
  on purpose and clients may use it, so replacing it would lock them out without a word. The
  daemon refuses to start with a ConfigError naming the file and both ways out.

The file is written atomically: a temporary file beside it (0600), fsync, then `link` (a new
file: a second process starting at the same moment keeps the first one's token) or `rename`
(replacing an empty one), then fsync of the folder. No reader ever sees a partial token.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from ragvisor.datadir import open_private
from ragvisor.errors import ConfigError, StoreError

ADMIN_TOKEN_FILE = "admin_token"  # noqa: S105 - a file name, not a secret
# At least 16 characters: even lowercase letters alone then give 75 bits, far beyond what
# guessing over HTTP can reach, and every generated token (32 characters) passes. Shorter
# ones are the hand-typed kind: "admin", "changeme", a PIN.
MIN_TOKEN_CHARS = 16
# 24 random bytes, 32 characters of base64url: 192 bits.
GENERATED_TOKEN_BYTES = 24


def token_problem(token: str) -> str | None:
    """What makes `token` unfit to guard `/admin/*`, or None when it is fit."""
    if not token.strip():
        return "is empty or only whitespace"
    if not token.isascii():
        return "has non-ASCII characters; use printable ASCII only"
    if any(not ("!" <= ch <= "~") for ch in token):  # 0x21-0x7e: visible ASCII
        return "has whitespace or control characters; a bearer token is one word"
    if len(token) < MIN_TOKEN_CHARS:
        return f"is {len(token)} characters long; it needs at least {MIN_TOKEN_CHARS}"
    return None


def generate_token() -> str:
    """A fresh random token (URL-safe, so it needs no quoting in a header or a shell)."""
    return secrets.token_urlsafe(GENERATED_TOKEN_BYTES)


def load_admin_token(configured: str, data_dir: Path, log: Any) -> str:
    """The configured token when set, else the one in `<data_dir>/admin_token` (see above).

    `configured` was checked by the settings already. Raises ConfigError when the file holds an
    unfit token or cannot be read, StoreError when it cannot be written.
    """
    if configured:
        return configured
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        token = write_new_token(path)
        log.info("admin_token.generated", path=str(path))
        return token
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        token = write_token_file(path, generate_token(), replace=True)
        log.warning("admin_token.regenerated", path=str(path), reason="the file was empty")
        return token
    problem = token_problem(text)
    if problem is not None:
        raise ConfigError(
            f"{path}: the admin token there {problem}. Put a token of at least "
            f"{MIN_TOKEN_CHARS} printable ASCII characters without spaces in it, or delete the "
            "file to have a new one generated at the next start"
        )
    return text


def write_new_token(path: Path) -> str:
    """Create `path` holding a fresh token; returns the token the file holds afterwards.

    If another process created the file meanwhile, its token is kept and returned.
    Raises StoreError when the file cannot be written, ConfigError when the other process's
    file cannot be read back.
    """
    try:
        return write_token_file(path, generate_token(), replace=False)
    except FileExistsError:
        try:
            return path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc


def write_token_file(path: Path, token: str, *, replace: bool) -> str:
    """Write `token` to `path` atomically, 0600; returns `token`.

    `replace=False` never overwrites: FileExistsError if `path` exists by then. Raises
    StoreError for any other failure, leaving no temporary file behind.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with os.fdopen(open_private(temporary, os.O_WRONLY | os.O_EXCL), "w") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            temporary.replace(path)
        else:
            os.link(temporary, path)  # fails if the file appeared meanwhile: theirs wins
        _fsync_folder(path.parent)
    except FileExistsError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot write the admin token to {path}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return token


def _fsync_folder(folder: Path) -> None:
    """Make a rename or link in `folder` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
