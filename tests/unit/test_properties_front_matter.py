"""Properties of the title readers: front matter and first heading, over generated Markdown.

Inputs are decoded text as `read_document` passes it on: no lone surrogates, ``\\n`` newlines.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from ragvisor.core.titles import markdown_title, split_front_matter

ONE_LINE = st.characters(exclude_categories=["Cs"], exclude_characters="\r\n")
LINE = st.text(ONE_LINE, max_size=40)
SHAPED_LINE = st.one_of(
    LINE,
    st.sampled_from(["---", "...", "--- ", "===", "-", "```", "~~~", "", "title:", "# ", "#"]),
    st.builds(
        lambda key, value: f"{key}: {value}", st.sampled_from(["title", "Title", " title"]), LINE
    ),
    st.builds(lambda level, title: f"{'#' * level} {title}", st.integers(1, 7), LINE),
)
DOCUMENT = st.lists(SHAPED_LINE, max_size=20).map("\n".join)
MAYBE_FRONT = st.one_of(DOCUMENT, DOCUMENT.map(lambda text: "---\n" + text))
TITLE = st.text(ONE_LINE, min_size=1, max_size=40).map(lambda t: " ".join(t.split())).filter(bool)
OTHER_KEY = st.builds(
    lambda key, value: f"{key}: {value}",
    st.sampled_from(["author", "tags", "date", "subtitle", "titles"]),
    LINE.filter(lambda v: v.rstrip() not in ("---", "...")),
)


def is_one_trimmed_line(title: str) -> bool:
    """A title fit for a result row: no line boundary of any kind (vertical tab, form feed,
    U+2028 … included), no surrounding whitespace and no runs of it."""
    return title == " ".join(title.split())


@given(MAYBE_FRONT)
@example("---\n")
@example("---\n---")
@example("---\ntitle: '\n---\n")
@example('---\ntitle: "  "\n---\n')
@example("---\ntitle: Disk\u2028full\x0bnow\n---\n")
def test_front_matter_never_raises_and_gives_a_one_line_title(text: str) -> None:
    """Any text splits into a one-line title and a body that is a tail of the text."""
    title, body = split_front_matter(text)
    assert is_one_trimmed_line(title)
    assert text.endswith(body)
    if body == text:
        assert title == ""


@given(
    TITLE,
    st.sampled_from(["{}", '"{}"', "'{}'", "  {}  "]),
    st.lists(OTHER_KEY, max_size=4),
    st.integers(0, 4),
    st.sampled_from(["---", "...", "---   "]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=200),
)
def test_front_matter_round_trips(
    title: str,
    quoting: str,
    others: list[str],
    title_at: int,
    closing: str,
    body: str,
) -> None:
    """Front matter written with a title line gives back that title and the body byte for byte."""
    if quoting == "{}" and len(title) >= 2 and title[0] == title[-1] and title[0] in "\"'":
        quoting = '"{}"'  # written bare it would read as quoted
    lines = [*others]
    lines.insert(min(title_at, len(lines)), "title: " + quoting.format(title))
    text = "---\n" + "\n".join(lines) + f"\n{closing}\n" + body
    assert split_front_matter(text) == (title, body)


@given(DOCUMENT)
@example("Title\n===")
@example("- item\n---")
@example("# \n")
@example("# Disk\u2028full\n")
@example("Setup\x0cguide\n=====")
def test_first_heading_title_is_one_trimmed_line_of_the_text(text: str) -> None:
    """The heading title never raises, is one trimmed line, and its words are in the document."""
    title = markdown_title(text)
    assert is_one_trimmed_line(title)
    assert all(word in text for word in title.split())


@given(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="`~"), max_size=300))
def test_nothing_inside_an_unclosed_fence_is_a_title(text: str) -> None:
    """An unclosed code fence runs to the end: no heading in it becomes the title."""
    assert markdown_title("```\n" + text) == ""
