"""A tiny but real cross-encoder for the reranker's tests and bench: an ONNX graph built with
``onnx.helper`` and a ``tokenizer.json`` built with ``tokenizers``.

It has a BERT cross-encoder's signature (``input_ids``, ``attention_mask``, ``token_type_ids``
int64 ``[batch, sequence]`` in, ``logits`` float ``[batch, 1]`` out) and a scoring rule one can
work out by hand: the score of a pair is the number of the passage's tokens (segment 1) that
also occur in the query (segment 0), counting only words of the vocabulary — special tokens,
padding and unknown words weigh nothing. So a passage that repeats the query's words scores
higher, and a word cut off by truncation no longer counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
OPSET = 17


def write_tokenizer(path: Path, words: Sequence[str], *, passage_segment: int = 1) -> None:
    """A lowercasing word-level tokenizer over ``words``; a pair reads ``[CLS] query [SEP]
    passage [SEP]``, the passage and its [SEP] in segment ``passage_segment`` (BERT's 1; a
    RoBERTa-style template leaves everything in 0)."""
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *words))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair=f"[CLS] $A [SEP] $B:{passage_segment} [SEP]:{passage_segment}",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.save(str(path))


def overlap_model(vocab_size: int, *, with_token_types: bool = True) -> onnx.ModelProto:
    """The scoring rule above as a graph: one-hot the ids, sum them per segment into bags of
    words, and count the passage's tokens whose word is in the query's bag.

    Without ``with_token_types`` the graph has no ``token_type_ids`` input (as RoBERTa-style
    exports have none) and treats every token as the passage's: the score is then the count
    of weighted tokens — enough for the tests that need such a signature.
    """
    weights = np.ones(vocab_size, dtype=np.float32)
    weights[: len(SPECIAL_TOKENS)] = 0.0  # special tokens and unknown words weigh nothing
    initializers = [
        numpy_helper.from_array(weights, "word_weights"),
        numpy_helper.from_array(np.array(vocab_size, dtype=np.int64), "depth"),
        numpy_helper.from_array(np.array([0.0, 1.0], dtype=np.float32), "one_hot_values"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "sequence_axis"),
        numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"),
    ]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    types = helper.make_tensor_value_info(
        "token_type_ids", TensorProto.INT64, ["batch", "sequence"]
    )
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    nodes = [
        # [batch, sequence, vocab], weighted and masked: padding and special tokens drop out.
        helper.make_node("OneHot", ["input_ids", "depth", "one_hot_values"], ["hot"], axis=-1),
        helper.make_node("Mul", ["hot", "word_weights"], ["weighted"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "minus_one"], ["mask_3d"]),
        helper.make_node("Mul", ["weighted", "mask_3d"], ["tokens"]),
    ]
    initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"))
    if with_token_types:
        nodes += [
            helper.make_node("Cast", ["token_type_ids"], ["second_f"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["one", "second_f"], ["first_f"]),
            helper.make_node("Unsqueeze", ["second_f", "minus_one"], ["second_3d"]),
            helper.make_node("Unsqueeze", ["first_f", "minus_one"], ["first_3d"]),
            helper.make_node("Mul", ["tokens", "second_3d"], ["passage_tokens"]),
            helper.make_node("Mul", ["tokens", "first_3d"], ["query_tokens"]),
            # [batch, vocab]: how often each word occurs in the passage; whether in the query.
            helper.make_node(
                "ReduceSum", ["passage_tokens", "sequence_axis"], ["passage_bag"], keepdims=0
            ),
            helper.make_node(
                "ReduceSum", ["query_tokens", "sequence_axis"], ["query_counts"], keepdims=0
            ),
            helper.make_node("Min", ["query_counts", "one"], ["query_bag"]),
            helper.make_node("Mul", ["passage_bag", "query_bag"], ["shared"]),
        ]
        inputs = [ids, mask, types]
    else:
        nodes.append(
            helper.make_node("ReduceSum", ["tokens", "sequence_axis"], ["shared"], keepdims=0)
        )
        inputs = [ids, mask]
    nodes.append(helper.make_node("ReduceSum", ["shared", "sequence_axis"], ["logits"]))
    graph = helper.make_graph(nodes, "tiny_cross_encoder", inputs, [logits], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model, full_check=True)
    return model


def embedding_model(vocab_size: int, hidden: int = 4) -> onnx.ModelProto:
    """A sentence-embedding model's signature: ``last_hidden_state [batch, sequence, hidden]``,
    what a cross-encoder must not be mistaken for."""
    table = np.random.default_rng(0).standard_normal((vocab_size, hidden)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"])],
        "tiny_embedder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch", "sequence"]
            ),
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]
            )
        ],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def write_cross_encoder(
    model_dir: Path,
    words: Sequence[str],
    *,
    model_file: str = "model.onnx",
    with_token_types: bool = True,
    passage_segment: int = 1,
) -> Path:
    """Write the tiny cross-encoder over ``words`` into ``model_dir``; returns ``model_dir``."""
    (model_dir / model_file).parent.mkdir(parents=True, exist_ok=True)
    write_tokenizer(model_dir / "tokenizer.json", words, passage_segment=passage_segment)
    vocab_size = len(SPECIAL_TOKENS) + len(words)
    onnx.save(overlap_model(vocab_size, with_token_types=with_token_types), model_dir / model_file)
    return model_dir
