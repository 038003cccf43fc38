"""The soak's load: the corpus and the questions asked about it, an editor that keeps changing
files, and the clients (search, ask plain and streamed, hang-ups, admin syncs) that record every
call in the ledger.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    QUESTIONS,
)

REQUEST_TIMEOUT_S = 300.0  # one ask waits in the ask lane behind the others; bounded anyway
MODES = ("dense", "keyword", "hybrid")
# Question shapes filled with the corpus's own headings, so every prompt differs.
TEMPLATES = (
    "What does the documentation say about {}?",
    "How do I configure {}?",
    "Explain {} in two sentences.",
    "What can go wrong with {}, and what do I do then?",
)
_WORD = re.compile(r"[A-Za-z][A-Za-z_.-]{2,}")


@dataclass
class Ledger:
    """Every request's route, status and latency, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: list[tuple[str, str, float, float]] = field(default_factory=list)  # route, status, t, s

    def add(self, route: str, status: str, started: float, took_s: float) -> None:
        with self.lock:
            self.rows.append((route, status, started, took_s))


# -- the corpus and what to ask about it --------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """Words, headings and paragraphs of the corpus: the stuff of queries, questions and edits."""

    words: list[str]
    headings: list[str]
    paragraphs: list[str]

    @classmethod
    def read(cls, corpus: Path) -> Material:
        words: set[str] = set()
        headings: list[str] = []
        paragraphs: list[str] = []
        for path in sorted(corpus.rglob("*.md")):
            text = path.read_text(encoding="utf-8")
            for raw in text.split("\n\n"):
                block = raw.strip()
                if block.startswith("#"):
                    headings.append(block.lstrip("#").strip().splitlines()[0])
                elif len(block) > 80 and not block.startswith(("```", "|")):
                    paragraphs.append(block)
            words.update(w.lower() for w in _WORD.findall(text) if len(w) < 30)
        return cls(sorted(words), headings, paragraphs)

    def query(self, rng: random.Random) -> str:
        if rng.random() < 0.3:
            return rng.choice(self.headings)
        return " ".join(rng.sample(self.words, rng.randint(1, 5)))

    def question(self, rng: random.Random) -> str:
        if rng.random() < 0.3:
            return rng.choice(QUESTIONS)
        return rng.choice(TEMPLATES).format(rng.choice(self.headings).lower())

    def document(self, rng: random.Random, title: str) -> str:
        body = "\n\n".join(rng.sample(self.paragraphs, rng.randint(2, 6)))
        return f"# {title}\n\n{body}\n"


class Editor:
    """Edits that keep the corpus's size: modify, add, delete what was added, delete, restore."""

    STEPS = ("modify", "add", "delete_added", "delete", "restore")

    def __init__(self, corpus: Path, material: Material, rng: random.Random) -> None:
        self._corpus = corpus
        self._material = material
        self._rng = rng
        self._originals = {p: p.read_text(encoding="utf-8") for p in sorted(corpus.rglob("*.md"))}
        self._added: list[Path] = []
        self._deleted: Path | None = None
        self._step = 0
        self._count = 0

    def edit(self) -> str:
        """Make the next edit; returns what was done."""
        kind = self.STEPS[self._step % len(self.STEPS)]
        self._step += 1
        self._count += 1
        if kind == "modify":
            path, text = self._rng.choice(list(self._originals.items()))
            if path.exists():
                extra = self._rng.choice(self._material.paragraphs)
                path.write_text(f"{text}\n{extra}\n\nEdit {self._count}.\n", encoding="utf-8")
        elif kind == "add":
            path = self._corpus / f"soak-{self._count}.md"
            path.write_text(self._material.document(self._rng, f"Soak note {self._count}"))
            self._added.append(path)
        elif kind == "delete_added" and self._added:
            self._added.pop(0).unlink()
        elif kind == "delete":
            self._deleted = self._rng.choice(list(self._originals))
            self._deleted.unlink(missing_ok=True)
        elif kind == "restore" and self._deleted is not None:
            self._deleted.write_text(self._originals[self._deleted], encoding="utf-8")
            self._deleted = None
        return kind


# -- the clients --------------------------------------------------------------------------------


def timed(ledger: Ledger, route: str, call: Callable[..., str], *args: Any) -> None:
    """Run one request, recording its status (or the exception's name) and latency."""
    started = time.monotonic()
    try:
        status = call(*args)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    ledger.add(route, status, started, time.monotonic() - started)


def search_client(url: str, material: Material, ledger: Ledger, stop: threading.Event, seed: int):
    """Searches in every mode, with think time between them."""
    rng = random.Random(seed)
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        while not stop.is_set():
            params = {"q": material.query(rng), "k": rng.randint(1, 10), "mode": rng.choice(MODES)}
            timed(ledger, "search", search_one, client, url, params)
            stop.wait(rng.uniform(0.05, 0.5))


def search_one(client: httpx.Client, url: str, params: dict[str, Any]) -> str:
    return str(client.get(f"{url}/search", params=params).status_code)


def extractive(answer: dict[str, Any]) -> bool:
    """Whether the daemon answered with passages instead of the model (marked `degraded`)."""
    return (answer.get("degraded") or {}).get("answer") == "extractive"


def ask_plain(client: httpx.Client, url: str, question: str) -> str:
    response = client.post(f"{url}/ask", json={"question": question})
    if response.status_code == 200 and extractive(response.json()):
        return "200 extractive"
    return str(response.status_code)


def ask_streamed(client: httpx.Client, url: str, question: str, hang_up: bool) -> str:
    """Stream an answer to its `done` event, or hang up after the first words."""
    with client.stream("POST", f"{url}/ask", json={"question": question, "stream": True}) as r:
        if r.status_code != 200:
            r.read()
            return str(r.status_code)
        for line in r.iter_lines():
            event = json.loads(line) if line.strip() else {}
            kind = event.get("type")
            if kind == "delta" and hang_up:
                return "200 hung up"
            if kind == "error":
                return "200 error event"
            if kind == "done":
                return "200 extractive" if extractive(event) else "200"
    return "200 no done event"


def ask_client(
    url: str, material: Material, ledger: Ledger, stop: threading.Event, seed: int, hang_up: float
) -> None:
    """Asks one after another, plain and streamed in turn."""
    rng = random.Random(seed)
    with httpx.Client(timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0)) as client:
        streamed = seed % 2 == 0
        while not stop.is_set():
            question = material.question(rng)
            if streamed:
                leave = rng.random() < hang_up
                timed(ledger, "ask_stream", ask_streamed, client, url, question, leave)
            else:
                timed(ledger, "ask", ask_plain, client, url, question)
            streamed = not streamed
            stop.wait(rng.uniform(0.1, 1.0))


def sync_now(client: httpx.Client, url: str) -> str:
    return str(client.post(f"{url}/admin/sync", params={"wait": "true"}).status_code)


def editor_client(
    url: str, token: str, editor: Editor, ledger: Ledger, stop: threading.Event, every_s: float
) -> None:
    """An edit, then a sync that waits for its report, every `every_s`."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, headers=headers) as client:
        while not stop.wait(every_s):
            editor.edit()
            timed(ledger, "admin_sync", sync_now, client, url)
