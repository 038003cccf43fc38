"""The rules for a path given to `PUT`/`DELETE /documents/{path}`, and the pattern that
publishes them.

A path names a file below the managed corpus folder: relative, `/`-separated, no empty, `.` or
`..` name, no control character (NUL included), at most `MAX_PATH_CHARS` characters. That rule
is `path_problem` (400 when broken) and `PATH_PATTERN` says exactly the same for the OpenAPI
document — `tests/unit/test_document_paths.py` holds the two together, as `text_pattern` is held
to `validate_query`. What needs the settings or the disk — the corpus globs, names longer than
the file system takes, symlinks and folders on the way — is `path_refusal` (403) and the writer's
own checks (`application.document_writer`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from ragvisor.core.documents import CorpusSpec
from ragvisor.core.scope import included

MAX_PATH_CHARS = 1024
# NAME_MAX of Linux file systems (ext4, xfs, btrfs), in bytes of the encoded name.
NAME_MAX_BYTES = 255
# C0 controls and DEL: legal in Linux names, but a newline or escape in a name breaks every log
# line and terminal that shows it, and NUL ends a C string.
_CONTROL = "\\x00-\\x1f\\x7f"
# The end of the text: `$` would also match before a final newline (in Python's dialect, which
# the fuzzer generates with), and a path ending in one is refused.
_END = r"(?![\s\S])"
PATH_PATTERN = (
    f"^(?!/)(?!.*/{_END})(?!.*//)(?!(?:.*/)?\\.{{1,2}}(?:/|{_END}))"
    f"[^{_CONTROL}%]{{1,{MAX_PATH_CHARS}}}{_END}"
)


_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda p: not p, "is empty"),
    (lambda p: len(p) > MAX_PATH_CHARS, f"is longer than {MAX_PATH_CHARS} characters"),
    (
        lambda p: any(ord(c) < 0x20 or ord(c) == 0x7F for c in p),
        "holds a control character (NUL, newline, …)",
    ),
    # A % is refused too: a client that sends one unescaped (`a%0Bb`) means something else by it
    # than the path the server decodes (a control character), and no note needs it in its name.
    (lambda p: "%" in p, "holds a % (not taken in document names)"),
    (
        lambda p: p.startswith("/"),
        "is absolute; give it relative to the managed corpus folder",
    ),
    (lambda p: p.endswith("/"), "ends with / (a folder, not a document)"),
    (lambda p: "" in p.split("/"), "has an empty name (//)"),
    (
        lambda p: bool({".", ".."} & set(p.split("/"))),
        "has a . or .. name; give the path without them",
    ),
)


def path_problem(path: str) -> str | None:
    """Why `path` is not a well-formed document path (the first rule it breaks), or None."""
    return next((problem for broken, problem in _RULES if broken(path)), None)


def path_refusal(path: str, spec: CorpusSpec) -> str | None:
    """Why a well-formed path is still no document the daemon writes, or None: a name longer
    than the file system takes, or the corpus globs leave it out (`corpus.include`/`exclude`)."""
    for name in PurePosixPath(path).parts:
        if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
            return f"a name in it is longer than {NAME_MAX_BYTES} bytes"
    if not included(path, spec):
        return "the corpus globs leave it out (corpus.include, corpus.exclude)"
    return None
