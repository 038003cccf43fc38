"""Ollama-aware sync, end to end through `ragvisor sync`: a chunk the embedding model refuses
skips its document and nothing else, a failing backend still fails the sync, and task prefixes
re-embed the corpus under a new fingerprint.

The embedder is a real `ragvisor worker` serving MiniLM over Ollama's `/api/embed`, which
refuses an input over the model's 256-token context exactly as Ollama does with
`truncate: false` (400, "the input length exceeds the context length"); the failing backend is
the same worker behind `ragvisor faultproxy` answering every embedding request with a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ragvisor.faultproxy import Fault, FaultPlan, running_proxy
from tests.integration.conftest import gguf_file, run_cli
from tests.integration.corpus import write_corpus
from tests.integration.worker_fixtures import WorkerProcess, start_worker, stop_worker

pytestmark = pytest.mark.slow

ALIAS = "all-minilm"  # the worker's Ollama-style name for its embedder
# 3,889 characters of distinct words: one chunk of well over 256 tokens.
OVERLONG = " ".join(f"term{n}" for n in range(500))


@pytest.fixture(scope="module")
def worker(model_dir, tmp_path_factory) -> Iterator[WorkerProcess]:
    """One worker for the module, serving the embedder; it must exit 0 on SIGTERM."""
    root = tmp_path_factory.mktemp("refused-chunks-worker")
    process = start_worker(gguf_file(), model_dir, root / "data", root / "worker.log")
    yield process
    code = stop_worker(process)
    assert code == 0, f"worker exited {code}:\n{process.log_path.read_text()}"


def ollama_env(url: str, **extra: str) -> dict[str, str]:
    """The embedder on the worker's (or a proxy's) Ollama API; chunks long enough that one
    paragraph of OVERLONG stays one chunk."""
    return {
        "RAGVISOR_EMBEDDER__BACKEND": "ollama",
        "RAGVISOR_EMBEDDER__URL": url,
        "RAGVISOR_EMBEDDER__MODEL": ALIAS,
        "RAGVISOR_CORPUS__CHUNK_SIZE_CHARS": "6000",
        **extra,
    }


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    """The JSON log events called `name` among a command's stderr lines."""
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            found.append(event)
    return found


def test_an_over_long_chunk_skips_its_document_and_the_rest_of_the_corpus_syncs(
    tmp_path, worker, model_dir
):
    """1. A corpus syncs whole; 2. one note is edited to hold a paragraph over the model's
    context and another note is added: the sync exits 0, the edited note is reported skipped
    with what to change (and logged), the new note is committed; 3. the edited note's
    previous version is still stored and found; 4. once shortened, it syncs again."""
    corpus = write_corpus(tmp_path / "notes")
    args = ["--corpus", str(corpus), "--data-dir", str(tmp_path / "data")]
    env = ollama_env(worker.url)

    # 1. Everything fits.
    first = run_cli(["sync", *args, "--json"], model_dir, **env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["skipped"] == []

    # 2. bread.md now holds a paragraph the model refuses; kettle.md is new.
    bread = corpus / "recipes" / "bread.md"
    bread.write_text(f"# Sourdough bread\n\nAn index of terms.\n\n{OVERLONG}\n")
    (corpus / "kettle.md").write_text("# Kettle\n\nDescale the kettle with citric acid monthly.\n")
    second = run_cli(["sync", *args, "--json"], model_dir, **env)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert [s["path"] for s in report["skipped"]] == [str(bread)]
    reason = report["skipped"][0]["reason"]
    assert "exceeds the context length" in reason
    assert "corpus.chunk_size_chars" in reason
    assert report["documents"]["new"] == 1  # kettle.md
    assert report["documents"]["changed"] == 0  # bread.md was not written
    (skipped,) = events(second.stderr, "sync.document_skipped")
    assert skipped["path"] == str(bread)
    assert skipped["kept"] == "the stored version"
    assert events(second.stderr, "sync.failed") == []

    # 3. The previous bread.md is still what the store has, and kettle.md is searchable.
    found = run_cli(
        ["search", *args, "--json", "--mode", "keyword", "Dutch oven"], model_dir, **env
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["path"] == "recipes/bread.md"
    kettle = run_cli(["search", *args, "--json", "-k", "1", "descale the kettle"], model_dir, **env)
    assert kettle.returncode == 0, kettle.stderr
    assert json.loads(kettle.stdout)["results"][0]["path"] == "kettle.md"

    # 4. Shortened, the note syncs like any other.
    bread.write_text("# Sourdough bread\n\nBake it in a Dutch oven, lid on for twenty minutes.\n")
    third = run_cli(["sync", *args, "--json"], model_dir, **env)
    assert third.returncode == 0, third.stderr
    again = json.loads(third.stdout)
    assert again["skipped"] == []
    assert again["documents"]["changed"] == 1


def test_a_backend_that_fails_every_embedding_still_fails_the_sync(tmp_path, worker, model_dir):
    """Every /api/embed answered 500 through the fault proxy: that is the backend, not one
    input, so after its retries the sync fails as a whole (exit 1, sync.failed) and skips
    nothing."""
    corpus = write_corpus(tmp_path / "notes")
    args = ["--corpus", str(corpus), "--data-dir", str(tmp_path / "data")]
    with running_proxy(worker.url) as proxy:
        proxy.set_plan(FaultPlan(probabilities={Fault.HTTP_500: 1.0}))
        env = ollama_env(proxy.url, RAGVISOR_EMBEDDER__RETRY__BACKOFF_BASE_S="0.05")
        result = run_cli(["sync", *args, "--json"], model_dir, **env)
        assert proxy.stats()["by_fault"][Fault.HTTP_500.value] == 3  # one call, three attempts
    assert result.returncode == 1, result.stdout
    assert events(result.stderr, "sync.document_skipped") == []
    (failed,) = events(result.stderr, "sync.failed")
    assert "500" in failed["error"]


def test_task_prefixes_re_embed_the_corpus_under_a_new_fingerprint(tmp_path, model_dir):
    """1. A sync without prefixes; 2. the same corpus with nomic-embed-text's prefixes: a new
    fingerprint, every chunk embedded again (changed because of the model); 3. searches find
    the right note through the query prefix; 4. a third sync embeds nothing."""
    corpus = write_corpus(tmp_path / "notes")
    args = ["--corpus", str(corpus), "--data-dir", str(tmp_path / "data")]
    prefixes = {
        "RAGVISOR_EMBEDDER__QUERY_PREFIX": "search_query: ",
        "RAGVISOR_EMBEDDER__DOCUMENT_PREFIX": "search_document: ",
    }

    first = run_cli(["sync", *args, "--json"], model_dir)
    assert first.returncode == 0, first.stderr
    plain = json.loads(first.stdout)

    second = run_cli(["sync", *args, "--json"], model_dir, **prefixes)
    assert second.returncode == 0, second.stderr
    prefixed = json.loads(second.stdout)
    assert prefixed["fingerprint"] != plain["fingerprint"]
    assert prefixed["embeddings_computed"] == plain["embeddings_computed"]
    assert prefixed["changed_because"] == {"model": plain["documents"]["new"]}

    found = run_cli(["search", *args, "--json", "-k", "1", "swappiness"], model_dir, **prefixes)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["path"] == "ops/swap.md"

    third = run_cli(["sync", *args, "--json"], model_dir, **prefixes)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["embeddings_computed"] == 0
