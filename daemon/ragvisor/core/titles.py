"""A document's title, which results, the CLI and the prompt's source headers show: the front
matter's `title:`, else the first Markdown heading outside code, else the file's name. Always
one line.
"""

from __future__ import annotations

import re

from ragvisor.core.chunking import atx_heading, fence_flags

_FRONT_MATTER_CLOSE = ("---", "...")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
# A line starting like a list item, quote or table row is not a setext heading's text.
_NOT_SETEXT_TEXT = re.compile(r"^\s*(?:[-*+>|]|\d+[.)])")


def split_front_matter(text: str) -> tuple[str, str]:
    """Return ``(title, body)``: the front matter's one-line ``title:`` and the text after it.

    Front matter is a block between a first line ``---`` and a closing ``---`` or ``...``;
    without a closing line the text is returned unchanged. A line parser, not YAML: only a
    plain ``title: value`` line is understood, which is all a title needs.
    """
    if not text.startswith("---\n"):
        return "", text
    lines = text.split("\n")
    for index in range(1, len(lines)):
        if lines[index].rstrip() in _FRONT_MATTER_CLOSE:
            title = ""
            for line in lines[1:index]:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == "title" and not line[:1].isspace():
                    title = _one_line(_unquote(value.strip()))
                    break
            return title, "\n".join(lines[index + 1 :])
    return "", text


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def _one_line(title: str) -> str:
    """Whitespace runs as one space: a title is one line in results, the CLI and the prompt.

    ``\\n`` never reaches a title, but vertical tab, form feed, NEL and U+2028 can (and would
    break a terminal line or the prompt's source header); tabs and double spaces read badly.
    """
    return " ".join(title.split())


def markdown_title(text: str) -> str:
    """The first heading outside code, on one line: ATX (``# T``) or setext (``T`` over ``===``)."""
    lines = text.split("\n")
    previous = ""
    for line, in_fence in zip(lines, fence_flags(lines), strict=True):
        if in_fence:
            previous = ""
            continue
        heading = atx_heading(line)
        if heading is not None:
            return _one_line(heading[1])
        if (
            previous.strip()
            and _SETEXT_UNDERLINE.match(line)
            and not _NOT_SETEXT_TEXT.match(previous)
        ):
            return _one_line(previous)
        previous = line
    return ""


def title_from_stem(stem: str) -> str:
    """A title for a file without one: its name, with dashes and underscores as spaces."""
    return " ".join(stem.replace("-", " ").replace("_", " ").split()) or stem
