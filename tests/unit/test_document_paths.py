"""The document path rule and the pattern the OpenAPI document publishes for it say the same."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragvisor.core.document_paths import PATH_PATTERN, path_problem, path_refusal
from ragvisor.core.documents import CorpusSpec

# Paths made mostly of what the rule is about: slashes, dots, controls, a few letters.
EDGY = st.lists(
    st.sampled_from(["/", ".", "..", "a", "b.md", "\x00", "\n", "\x7f", "é", " ", "\\"]),
    max_size=10,
).map("".join)


@settings(database=None, max_examples=600, deadline=None)
@given(path=EDGY)
def test_pattern_matches_exactly_the_paths_path_problem_takes(path):
    """For any path, the published pattern matches iff path_problem finds nothing wrong."""
    assert (re.search(PATH_PATTERN, path) is not None) == (path_problem(path) is None)


@pytest.mark.parametrize(
    ("path", "problem"),
    [("../../etc/passwd", ". or .."), ("/etc/passwd", "absolute"), ("a//b.md", "empty name"),
     ("a/./b.md", ". or .."), ("a\x00.md", "control"), ("docs/", "ends with /"), ("", "empty"),
     ("a" * 1025, "longer than 1024")],
)  # fmt: skip
def test_malformed_paths_say_why(path, problem):
    """Traversal, absolute paths, NUL and the rest are named in the message."""
    assert problem in (path_problem(path) or "")


@pytest.mark.parametrize(
    ("path", "refused"),
    [("guides/a.md", False), ("notes.txt", False), ("script.py", True), (".git/x.md", True),
     ("node_modules/a.md", True), ("a/.hidden/b.md", True), ("é" * 128 + ".md", True)],
)  # fmt: skip
def test_paths_the_globs_leave_out_are_refused(path, refused):
    """The corpus globs (and NAME_MAX) decide which well-formed paths may be written."""
    assert (path_refusal(path, CorpusSpec(roots=())) is not None) is refused
