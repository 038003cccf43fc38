"""The ONNX cross-encoder reranker, on a tiny but real ONNX model built here.

The model (tests/cross_encoder_model.py) counts the passage's tokens whose word occurs in the
query, so every score below can be worked out by hand: what is pinned is how the reranker
tokenizes pairs, feeds the runtime and checks its files, not a model's quality.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest

from ragvisor.config import RerankSettings, parse_settings
from ragvisor.core.hashing import file_sha256
from ragvisor.core.protocols import Reranker
from ragvisor.core.retrieval import Grouping, QueryLimits, Retriever, SearchHit, SearchMode
from ragvisor.errors import ConfigError, InputError, ModelFileError
from ragvisor.rerank import OnnxCrossEncoder, build_reranker
from ragvisor.rerank.cross_encoder import logit_scores
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder
from tests.cross_encoder_model import embedding_model, write_cross_encoder
from tests.helpers import commit_paragraphs, make_document

WORDS = ("swap", "file", "memory", "neo4j", "heap", "page", "cache", "ollama", "model")


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return write_cross_encoder(tmp_path / "tiny-cross-encoder", WORDS)


def test_scores_follow_the_models_rule_in_the_callers_order(model_dir) -> None:
    """Each passage gets the count of its tokens that are query words, in the order given."""
    reranker = OnnxCrossEncoder(model_dir)
    passages = [
        "the neo4j heap",
        "swap file and the swap file again",
        "memory",
        "",
        "a swap FILE",
    ]
    assert reranker.score("swap file", passages) == [0.0, 4.0, 0.0, 0.0, 2.0]
    assert reranker.score("swap file", []) == []
    assert reranker.scored_pairs_total == 5
    assert reranker.name == "tiny-cross-encoder"
    as_protocol: Reranker = reranker  # mypy checks that it fits the seam
    assert as_protocol.score("heap", ["heap"]) == [1.0]


def test_scores_do_not_depend_on_how_the_pairs_are_batched(model_dir) -> None:
    """Runs of a few pairs, grouped by length, give the same scores as one run of all."""
    passages = [("swap " * n + "heap " * (7 - n)).strip() for n in range(8)]
    one_run = OnnxCrossEncoder(model_dir).score("swap", passages)
    small_runs = OnnxCrossEncoder(model_dir, batch_pairs=3).score("swap", passages)
    assert one_run == small_runs == [float(n) for n in range(8)]


def test_the_passage_is_the_second_segment(model_dir) -> None:
    """A pair reads [CLS] query [SEP] passage [SEP], the passage and its [SEP] in segment 1."""
    encoding = OnnxCrossEncoder(model_dir).encode_pairs("swap file", ["neo4j heap"])[0]
    assert encoding.tokens == ["[CLS]", "swap", "file", "[SEP]", "neo4j", "heap", "[SEP]"]
    assert encoding.type_ids == [0, 0, 0, 0, 1, 1, 1]


def test_pairs_in_one_call_are_padded_to_the_longest(model_dir) -> None:
    """Shorter pairs are padded with attention mask 0, so padding never adds to a score."""
    encodings = OnnxCrossEncoder(model_dir).encode_pairs("swap", ["swap", "swap swap swap"])
    assert len(encodings[0].ids) == len(encodings[1].ids) == 7
    assert encodings[0].attention_mask == [1, 1, 1, 1, 1, 0, 0]


def test_a_long_passage_is_cut_to_max_tokens(model_dir) -> None:
    """Past max_tokens the passage loses its tail (the query stays whole) and is counted."""
    reranker = OnnxCrossEncoder(model_dir, max_tokens=8)
    passage = "heap heap heap swap swap swap"
    encoding = reranker.encode_pairs("swap file", [passage])[0]
    assert encoding.tokens == ["[CLS]", "swap", "file", "[SEP]", "heap", "heap", "heap", "[SEP]"]
    assert reranker.score("swap file", [passage, "swap"]) == [0.0, 1.0]
    assert reranker.truncated_pairs == 1


def test_a_query_the_tokenizer_refuses_is_an_input_error(model_dir) -> None:
    """A lone surrogate in the query is the caller's mistake (400), not a model failure."""
    with pytest.raises(InputError, match="not valid Unicode"):
        OnnxCrossEncoder(model_dir).score("swap \ud800", ["swap"])


def test_the_model_file_is_found_where_exports_keep_it(tmp_path) -> None:
    """An export with its model under onnx/ (as Hugging Face ONNX exports ship) loads too."""
    model_dir = write_cross_encoder(tmp_path / "m", WORDS, model_file="onnx/model_quantized.onnx")
    reranker = OnnxCrossEncoder(model_dir)
    assert reranker.model_path == model_dir / "onnx" / "model_quantized.onnx"
    assert reranker.score("heap", ["heap"]) == [1.0]


def test_a_model_without_segment_ids_is_fed_without_them(tmp_path) -> None:
    """An export with no token_type_ids input (RoBERTa-like) is run with ids and mask only."""
    model_dir = write_cross_encoder(tmp_path / "m", WORDS, with_token_types=False)
    # This graph counts every vocabulary token of the pair: query and passage alike.
    assert OnnxCrossEncoder(model_dir).score("swap", ["heap page"]) == [3.0]


def test_two_class_logits_score_as_the_log_odds_of_relevant() -> None:
    """[batch, 2] scores logit[1] - logit[0]; [batch, 1] and [batch] are taken as they are."""
    path = Path("m.onnx")
    two = np.array([[0.5, 2.0], [1.0, -1.0]], dtype=np.float32)
    assert logit_scores(two, path).tolist() == [1.5, -2.0]
    assert logit_scores(np.array([[3.0], [1.0]], dtype=np.float32), path).tolist() == [3.0, 1.0]
    assert logit_scores(np.array([3.0], dtype=np.float32), path).tolist() == [3.0]
    with pytest.raises(ModelFileError, match=r"shaped \[1, 3\]"):
        logit_scores(np.zeros((1, 3), dtype=np.float32), path)


def test_missing_files_are_named(tmp_path, model_dir) -> None:
    """A missing folder, model or tokenizer is a ModelFileError naming what is missing."""
    with pytest.raises(ModelFileError, match="does not exist"):
        OnnxCrossEncoder(tmp_path / "nowhere")
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match=f"{model_dir} has no tokenizer.json"):
        OnnxCrossEncoder(model_dir)
    (model_dir / "model.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"holds none of model\.onnx, model_quantized\.onnx"):
        OnnxCrossEncoder(model_dir)


def test_a_sentence_embedding_model_is_refused(model_dir) -> None:
    """A [batch, sequence, hidden] output is refused as not a cross-encoder, naming the file."""
    onnx.save(embedding_model(len(WORDS) + 4), model_dir / "model.onnx")
    with pytest.raises(ModelFileError, match=r"model\.onnx has no \[batch, 1\] or \[batch, 2\]"):
        OnnxCrossEncoder(model_dir)


def test_a_model_without_token_ids_is_refused(model_dir) -> None:
    """A graph whose inputs are not input_ids and attention_mask is refused, naming them."""
    model = onnx.load(model_dir / "model.onnx")
    model.graph.input[0].name = "ids"
    for node in model.graph.node:
        node.input[:] = ["ids" if name == "input_ids" else name for name in node.input]
    onnx.save(model, model_dir / "model.onnx")
    with pytest.raises(ModelFileError, match=r"lacks input\(s\) input_ids"):
        OnnxCrossEncoder(model_dir)


def test_a_tokenizer_that_leaves_the_passage_in_segment_0_is_refused(tmp_path) -> None:
    """A model taking segment ids with a tokenizer that marks none (a RoBERTa-style pair
    template) would score nonsense without an error, so it is refused at load."""
    model_dir = write_cross_encoder(tmp_path / "m", WORDS, passage_segment=0)
    with pytest.raises(ModelFileError, match="does not put the second text of a pair"):
        OnnxCrossEncoder(model_dir)


def test_a_pinned_sha256_is_checked_at_load(model_dir) -> None:
    """The right hash (either case) loads; any other is refused, naming both hashes."""
    digest = file_sha256(model_dir / "model.onnx")
    assert OnnxCrossEncoder(model_dir, sha256=digest.upper()).score("swap", ["swap"]) == [1.0]
    with pytest.raises(ModelFileError, match=f"has sha256 {digest}, but rerank.sha256 pins 0+"):
        OnnxCrossEncoder(model_dir, sha256="0" * 64)


@pytest.mark.parametrize("argument", ["threads", "max_tokens", "batch_pairs"])
def test_nonsense_sizes_are_refused(model_dir, argument) -> None:
    """threads, max_tokens and batch_pairs below 1 are refused, naming the argument."""
    with pytest.raises(InputError, match=f"{argument} must be at least 1"):
        OnnxCrossEncoder(model_dir, **{argument: 0})


def test_settings_default_to_off_and_need_a_model_dir_when_enabled() -> None:
    """[rerank] is off by default; enabled without model_dir is refused at rerank.model_dir."""
    assert parse_settings({}).rerank == RerankSettings()
    assert build_reranker(RerankSettings()) is None
    with pytest.raises(ConfigError, match=r"rerank\.model_dir: .*required when rerank\.enabled"):
        parse_settings({"rerank": {"enabled": True}})
    for key, value in (("candidates", 0), ("candidates", 201), ("threads", 0), ("sha256", "ab")):
        with pytest.raises(ConfigError, match=rf"rerank\.{key}: "):
            parse_settings({"rerank": {"enabled": False, key: value}})


def test_the_builder_loads_what_the_settings_describe(model_dir) -> None:
    """An enabled [rerank] gives a loaded cross-encoder with its max_tokens and pinned hash."""
    settings = parse_settings(
        {
            "rerank": {
                "enabled": True,
                "model_dir": str(model_dir),
                "max_tokens": 64,
                "sha256": file_sha256(model_dir / "model.onnx"),
            }
        }
    ).rerank
    reranker = build_reranker(settings)
    assert reranker is not None
    assert reranker.max_tokens == 64
    assert reranker.score("heap", ["heap heap", "swap"]) == [2.0, 0.0]


SWAP = (
    "Swap on a small box: the swap file holds pages moved out of memory.",
    "The swap file is sized at half of memory, at most four gigabytes.",
)
NEO4J = ("Neo4j keeps its page cache apart from the heap.",)
OLLAMA = ("Ollama keeps a model in memory, and memory is what a model needs most.",)


@pytest.fixture
def store(tmp_path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data")
    embedder = FakeEmbedder()
    for path, paragraphs in {"swap.md": SWAP, "neo4j.md": NEO4J, "ollama.md": OLLAMA}.items():
        commit_paragraphs(s, make_document(path, "\n\n".join(paragraphs)), embedder)
    yield s
    s.close()


@pytest.mark.parametrize("mode", [SearchMode.DENSE, SearchMode.KEYWORD], ids=lambda m: m.value)
def test_a_retriever_with_the_cross_encoder_ranks_by_its_scores(store, model_dir, mode) -> None:
    """On a real store, the candidates of "memory gigabytes" come back in the model's order
    (ties in the first ranking's), each with the model's score: how often it says memory
    (gigabytes is not in the model's vocabulary, so only the first ranking weighs it)."""
    retriever = Retriever(
        store, FakeEmbedder(), QueryLimits(), reranker=OnnxCrossEncoder(model_dir)
    )
    query = "memory gigabytes"
    plain = retriever.search(query, 4, mode, group=Grouping.CHUNK, rerank=False)
    reranked = retriever.search(query, 4, mode, group=Grouping.CHUNK)
    counts = {OLLAMA[0]: 2.0, SWAP[0]: 1.0, SWAP[1]: 1.0, NEO4J[0]: 0.0}
    texts = _texts(store, plain.hits)
    expected = sorted(plain.hits, key=lambda hit: -counts[texts[hit.chunk_id]])
    assert [hit.chunk_id for hit in reranked.hits] == [hit.chunk_id for hit in expected]
    assert [hit.score for hit in reranked.hits] == [counts[texts[h.chunk_id]] for h in expected]
    assert reranked.hits[0].score == 2.0
    assert texts[plain.hits[0].chunk_id] != OLLAMA[0]  # so the model did change the order
    assert "rerank" in reranked.timings_ms


def _texts(store: SqliteStore, hits: Sequence[SearchHit]) -> dict[str, str]:
    return {r.chunk_id: r.text for r in store.get_chunks([hit.chunk_id for hit in hits])}
