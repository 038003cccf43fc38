"""Question sets for the retrieval evaluation, built from public documentation with its own FAQ.

A documentation package whose FAQ answers questions by pointing at other pages gives an honest
test: the FAQ's questions were written by the project, not by us, and the pages its answers link
to are the pages a reader should be shown. The FAQ pages themselves are removed from the corpus,
so the question's own text is never there to be found.

Each set is a Debian package (fetched with ``apt-get download`` — a package registry, reachable
here — and cached), its HTML pages converted to Markdown (html2text, ATX headings), and the FAQ
parsed: a question is a heading or a definition term ending in ``?``; its answer runs to the next
question; the pages it links to (internal links, anchors dropped, FAQ pages excluded) are the
pages that answer it. Questions whose answers link no page of the corpus are left out.

``python -m bench.retrieval_sets SET`` builds one set and prints its size.
"""

from __future__ import annotations

import argparse
import html
import json
import posixpath
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path

import html2text

from benchlib import progress


@dataclass(frozen=True)
class DocSet:
    """Where a documentation set comes from and how to read it."""

    name: str
    package: str
    html_root: str  # inside the package
    faq_pages: tuple[str, ...]  # glob patterns, relative to html_root
    skip: tuple[str, ...] = ()  # glob patterns of pages that are navigation, not content


DOC_SETS: dict[str, DocSet] = {
    "git": DocSet(
        name="git",
        package="git-doc",
        html_root="usr/share/doc/git-doc",
        faq_pages=("gitfaq.html",),
    ),
    "django": DocSet(
        name="django",
        package="python-django-doc",
        html_root="usr/share/doc/python-django-doc/html",
        faq_pages=("faq/*.html",),
        skip=(
            "genindex.html",
            "py-modindex.html",
            "search.html",
            "contents.html",
            "index.html",
            "releases/**",
            "_*/**",
        ),
    ),
    "python": DocSet(
        name="python",
        package="python3.11-doc",
        html_root="usr/share/doc/python3.11/html",
        faq_pages=("faq/*.html",),
        skip=(
            "genindex*.html",
            "py-modindex.html",
            "search.html",
            "contents.html",
            "index.html",
            "whatsnew/**",
            "_*/**",
            "bugs.html",
            "copyright.html",
            "license.html",
        ),
    ),
}

# Where the main text of a page starts and ends: Sphinx, then AsciiDoc (git's pages).
_BODY_MARKERS = (
    ('role="main">', '<div class="sphinxsidebar"'),
    ('<div id="content">', '<div id="footer">'),
)


@dataclass(frozen=True)
class Question:
    """A FAQ question and the corpus pages (relative Markdown paths) that answer it."""

    text: str
    pages: tuple[str, ...]
    source: str  # the FAQ page it came from


def main_html(page: str) -> str:
    """The page's main text: without navigation, sidebars and footers."""
    for start, end in _BODY_MARKERS:
        begin = page.find(start)
        if begin >= 0:
            stop = page.find(end, begin)
            return page[begin + len(start) : stop if stop >= 0 else len(page)]
    return page


def to_markdown(page: str) -> str:
    """HTML as Markdown with ATX headings, no links or images, lines unwrapped."""
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_links = True
    converter.ignore_images = True
    converter.ignore_emphasis = True
    text = converter.handle(main_html(page))
    return text.replace("¶", "")


class _FaqParser(HTMLParser):
    """Collects (question, linked hrefs) from a FAQ page: headings h2-h4 and <dt> terms that end
    with a question mark start a question, which collects links until the next one."""

    QUESTION_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "dt"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.entries: list[tuple[str, list[str]]] = []
        self._in_term: str | None = None
        self._term: list[str] = []
        self._links: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.QUESTION_TAGS:
            self._in_term, self._term = tag, []
            return
        if tag == "a" and self._links is not None and self._in_term is None:
            href = dict(attrs).get("href") or ""
            if href and not href.startswith(("#", "http:", "https:", "mailto:")):
                self._links.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag != self._in_term:
            return
        text = " ".join("".join(self._term).split()).rstrip("¶").strip()
        self._in_term = None
        if text.endswith("?"):
            self._links = []
            self.entries.append((text, self._links))
        elif tag != "dt":
            self._links = None  # a heading that is not a question ends the previous answer

    def handle_data(self, data: str) -> None:
        if self._in_term is not None:
            self._term.append(data)


def faq_questions(page: str, page_path: str, corpus_pages: set[str]) -> list[Question]:
    """The questions of one FAQ page whose answers link at least one corpus page."""
    parser = _FaqParser()
    parser.feed(main_html(page))
    questions = []
    for text, hrefs in parser.entries:
        pages: list[str] = []
        for href in hrefs:
            target = posixpath.normpath(
                posixpath.join(posixpath.dirname(page_path), href.split("#")[0])
            )
            markdown = _md_path(target)
            if markdown in corpus_pages and markdown not in pages:
                pages.append(markdown)
        if pages:
            questions.append(Question(html.unescape(text), tuple(pages), page_path))
    return questions


def _md_path(html_path: str) -> str:
    return re.sub(r"\.html$", ".md", html_path)


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether a page path matches a pattern (``*`` stays within one folder, ``**`` does not)."""
    return any(
        re.fullmatch(re.escape(p).replace(r"\*\*", ".*").replace(r"\*", "[^/]*"), path)
        for p in patterns
    )


def fetch_package(package: str, into: Path) -> Path:
    """Download and unpack a Debian package (not installed); returns the unpacked root."""
    root = into / "root"
    if root.is_dir():
        return root
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into) as tmp:
        progress(f"apt-get download {package}")
        subprocess.run(
            ["apt-get", "download", "-q", package], cwd=tmp, check=True, capture_output=True
        )
        deb = next(Path(tmp).glob("*.deb"))
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        (into / "version").write_text(deb.name + "\n")
        unpacked.rename(root)
    return root


def build_set(doc_set: DocSet, cache: Path) -> tuple[Path, list[Question]]:
    """The set's Markdown corpus folder and its questions, built once into ``cache``."""
    folder = cache / doc_set.name
    corpus = folder / "corpus"
    questions_file = folder / "questions.json"
    if questions_file.is_file() and corpus.is_dir():
        raw = json.loads(questions_file.read_text())
        return corpus, [Question(q["text"], tuple(q["pages"]), q["source"]) for q in raw]
    root = fetch_package(doc_set.package, folder / "package") / doc_set.html_root
    pages = sorted(str(p.relative_to(root)) for p in root.rglob("*.html"))
    faq = [p for p in pages if _matches(p, doc_set.faq_pages)]
    content = [p for p in pages if p not in faq and not _matches(p, doc_set.skip)]
    staging = folder / "corpus.new"
    for page in content:
        markdown = to_markdown((root / page).read_text(errors="replace"))
        if len(markdown.strip()) < 200:
            continue  # a redirect or an empty index page
        target = staging / _md_path(page)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(markdown)
    corpus_pages = {str(p.relative_to(staging)) for p in staging.rglob("*.md")}
    questions: list[Question] = []
    seen: set[str] = set()
    for page in faq:
        for question in faq_questions(
            (root / page).read_text(errors="replace"), page, corpus_pages
        ):
            if question.text.lower() not in seen:
                seen.add(question.text.lower())
                questions.append(question)
    staging.rename(corpus)
    questions_file.write_text(json.dumps([asdict(q) for q in questions], indent=1) + "\n")
    return corpus, questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", choices=sorted(DOC_SETS))
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()
    corpus, questions = build_set(DOC_SETS[args.set], args.cache)
    size = sum(p.stat().st_size for p in corpus.rglob("*.md"))
    print(
        f"{args.set}: {len(list(corpus.rglob('*.md')))} pages, {size / 1e6:.1f} MB, "
        f"{len(questions)} questions"
    )
    for q in questions[:5]:
        print(f"  {q.text} -> {', '.join(q.pages)}")


if __name__ == "__main__":
    main()
