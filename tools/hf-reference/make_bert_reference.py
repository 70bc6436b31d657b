#!/usr/bin/env python3
# Builds a tiny random Hugging Face BERT encoder (BertModel; its pooler is not exported) with a
# small WordPiece vocabulary, exports it to GGUF the way llama.cpp's converter
# exports BERT checkpoints (arch `bert`), and stores, for a handful of texts,
# the Hugging Face token ids, the float64 last hidden states and the CLS- and
# mean-pooled, L2-normalized sentence embeddings (tests/data/hf/).
#
# Needs PyTorch, transformers and numpy (sentence-transformers optional: when
# present, its Pooling + Normalize modules are run as a cross-check of the
# pooling formulas). CPU, a few seconds.
# Usage: python3 tools/hf-reference/make_bert_reference.py --out tests/data/hf
#
# Two files, same seed and weights:
#   bert-tiny.gguf      all F32, bert.pooling_type = 2 (CLS, as bge models)
#   bert-tiny-f16.gguf  2-D weights F16 except position_embd / token_types
#                       (the converter keeps those F32), pooling_type = 1
#                       (MEAN, as MiniLM models); its reference is computed
#                       from the F16-rounded weights.

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_writer import GGML_F16, GGML_F32, T_INT32, T_STRING, GGUFWriter  # noqa: E402

N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_LAYER = 2
N_CTX = 64          # max_position_embeddings: short, so the length limit is testable
N_TOKEN_TYPES = 2
EPS = 1e-12
SEED = 2001

# llama.cpp's pooling_type values (enum llama_pooling_type).
POOLING_MEAN, POOLING_CLS = 1, 2

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
DIGITS = list("0123456789")
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
# Whole words and continuation pieces, so that greedy longest-match has
# choices to make (e.g. "embeddings" -> embed ##ding ##s, not letters).
WORDS = ["the", "quick", "brown", "fox", "jump", "over", "lazy", "dog", "hello", "world",
         "kiln", "bake", "model", "at", "build", "time", "and", "serve", "embed", "naive",
         "cafe", "owner", "don", "like", "apple", "pear", "or", "is", "of", "to", "in",
         "it", "un", "river", "stone", "cloud", "light", "paper", "window", "garden", "silver",
         "music", "number", "yellow", "alpha", "beta", "gamma", "delta"]
PIECES = ["##es", "##ed", "##ing", "##ly", "##er", "##ding", "##believ", "##able",
          "##ably", "##ness"]

TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "kiln bakes models at build time and serves embeddings quickly.",
    # Accents stripped, upper case folded, an en dash (punctuation, not in the
    # vocabulary -> [UNK]) and a currency sign glued to a number (one word, [UNK]).
    "Naïve CAFÉ owners don't like 3.14 apples \u2013 or \u20ac5 pears?",
    "unbelievably",
    "",  # [CLS] [SEP] only
]
# A text that fills the context but for the two special tokens.
LONG_WORDS = "alpha beta gamma delta river stone cloud light paper window garden silver music number yellow".split()


def vocab_list():
    v = SPECIALS + PUNCT + DIGITS + LETTERS + ["##" + c for c in DIGITS + LETTERS] + WORDS + PIECES
    assert len(v) == len(set(v)), "duplicate vocabulary entry"
    return v


def make_tokenizer(vocab, tmp):
    path = os.path.join(tmp, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, f)
    kw = dict(vocab_file=path, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True)
    # Constructors differ across transformers versions; take the first that
    # tokenizes a known sentence as BERT does.
    makers = [("BertTokenizerFast", lambda: transformers.BertTokenizerFast(**kw)),
              ("BertTokenizer", lambda: transformers.BertTokenizer(**kw)),
              ("AutoTokenizer", lambda: transformers.AutoTokenizer.from_pretrained(tmp))]
    want = [vocab.index(t) for t in ("[CLS]", "hello", "world", "!", "[SEP]")]
    errors = []
    for name, make in makers:
        try:
            tok = make()
            got = tok("Hello World!")["input_ids"]
            if list(got) == want:
                print(f"  tokenizer: {name} ({type(tok).__name__})")
                return tok
            errors.append(f"{name}: {got} != {want}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise RuntimeError("no working BERT tokenizer: " + "; ".join(errors))


def long_text(tok):
    words, i = [], 0
    while True:
        cand = words + [LONG_WORDS[i % len(LONG_WORDS)]]
        if len(tok(" ".join(cand))["input_ids"]) > N_CTX:
            return " ".join(words)
        words, i = cand, i + 1


def build_model(n_vocab):
    cfg = transformers.BertConfig(
        vocab_size=n_vocab, hidden_size=N_EMBD, num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD, intermediate_size=N_FF, hidden_act="gelu",
        max_position_embeddings=N_CTX, type_vocab_size=N_TOKEN_TYPES, layer_norm_eps=EPS,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
    torch.manual_seed(SEED)
    # With its pooler, as checkpoints have one; the converter drops it (and so
    # does export_gguf): sentence embeddings pool the hidden states instead.
    model = transformers.AutoModel.from_config(cfg, attn_implementation="eager")
    model.eval()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "LayerNorm" in name or "layer_norm" in name.lower():
                v = (1.0 + 0.1 * r) if name.endswith("weight") else 0.1 * r
            elif name.endswith(".bias"):
                v = 0.1 * r
            elif "embeddings" in name:
                v = r
            else:
                v = r / math.sqrt(p.shape[1])
            p.copy_(v)
    return model


# HF parameter name -> GGUF tensor name (llama.cpp's converter mapping for BERT).
_LAYER_MAP = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_TOP_MAP = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.LayerNorm": "token_embd_norm",
}


def gguf_name(hf):
    """None for the pooler (not exported)."""
    if hf.startswith("pooler."):
        return None
    stem, kind = hf.rsplit(".", 1)
    stem = stem.replace("layer_norm", "LayerNorm")  # in case a version renames it
    if stem in _TOP_MAP:
        return f"{_TOP_MAP[stem]}.{kind}"
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", stem)
    if m and m.group(2) in _LAYER_MAP:
        return f"blk.{m.group(1)}.{_LAYER_MAP[m.group(2)]}.{kind}"
    raise KeyError(f"no GGUF name for HF parameter {hf!r}")


def keeps_f32(name, arr):
    # The converter: 1-D tensors, norms, position_embd and token_types stay F32.
    return arr.ndim < 2 or name.startswith("position_embd") or name.startswith("token_types")


def round_f16(model):
    with torch.no_grad():
        for hf, p in model.named_parameters():
            if gguf_name(hf) and not keeps_f32(gguf_name(hf), p.detach().numpy()):
                p.copy_(p.to(torch.float16).to(p.dtype))


def export_gguf(model, vocab, path, f16, pooling):
    arch = "bert"
    gw = GGUFWriter(arch)
    gw.add_string("general.type", "model")
    gw.add_string("general.name", os.path.splitext(os.path.basename(path))[0])
    gw.add_uint32(f"{arch}.block_count", N_LAYER)
    gw.add_uint32(f"{arch}.context_length", N_CTX)
    gw.add_uint32(f"{arch}.embedding_length", N_EMBD)
    gw.add_uint32(f"{arch}.feed_forward_length", N_FF)
    gw.add_uint32(f"{arch}.attention.head_count", N_HEAD)
    gw.add_float32(f"{arch}.attention.layer_norm_epsilon", EPS)
    gw.add_uint32("general.file_type", 1 if f16 else 0)
    gw.add_bool(f"{arch}.attention.causal", False)
    gw.add_uint32(f"{arch}.pooling_type", pooling)
    gw.add_uint32("general.quantization_version", 2)

    # Vocabulary as the converter writes BERT's: "phantom space" form (word
    # starts get U+2581, "##" continuations lose it), specials as control tokens.
    types = [3 if t in SPECIALS else 1 for t in vocab]
    tokens = [t if t in SPECIALS else (t[2:] if t.startswith("##") else "\u2581" + t) for t in vocab]
    gw.add_uint32("tokenizer.ggml.token_type_count", N_TOKEN_TYPES)
    gw.add_string("tokenizer.ggml.model", "bert")
    gw.add_string("tokenizer.ggml.pre", "default")
    gw.add_array("tokenizer.ggml.tokens", T_STRING, tokens)
    gw.add_array("tokenizer.ggml.token_type", T_INT32, types)
    gw.add_uint32("tokenizer.ggml.unknown_token_id", vocab.index("[UNK]"))
    gw.add_uint32("tokenizer.ggml.seperator_token_id", vocab.index("[SEP]"))  # GGUF's spelling
    gw.add_uint32("tokenizer.ggml.padding_token_id", vocab.index("[PAD]"))
    gw.add_uint32("tokenizer.ggml.cls_token_id", vocab.index("[CLS]"))
    gw.add_uint32("tokenizer.ggml.mask_token_id", vocab.index("[MASK]"))

    n = 0
    for hf, p in model.named_parameters():
        name = gguf_name(hf)
        if name is None:
            continue
        arr = p.detach().cpu().to(torch.float64).numpy()
        gw.add_tensor(name, arr, GGML_F32 if (not f16 or keeps_f32(name, arr)) else GGML_F16)
        n += 1
    assert n == 5 + 16 * N_LAYER, f"exported {n} tensors"
    gw.write(path)


CALLS = {"attn": 0}


def attention_f64(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Bidirectional attention with a float64 softmax: one unpadded sequence,
    so no mask. query/key/value [b, n_head, n, d]; returns [b, n, n_head, d]."""
    CALLS["attn"] += 1
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    probs = torch.softmax((query @ key.transpose(-1, -2)) * scaling, dim=-1)
    return (probs @ value).transpose(1, 2).contiguous(), probs


def hidden_states(model, ids, patched):
    mod = sys.modules[type(model).__module__]
    saved = getattr(mod, "eager_attention_forward", None)
    if patched and saved is not None:
        mod.eager_attention_forward = attention_f64
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), token_type_ids=torch.zeros(1, len(ids), dtype=torch.long))
    finally:
        if saved is not None:
            mod.eager_attention_forward = saved
    return out.last_hidden_state[0].numpy()


def pool(h, mode):
    v = h[0] if mode == "cls" else h.mean(axis=0)
    return v / max(np.linalg.norm(v), 1e-12)  # torch.nn.functional.normalize(p=2, eps=1e-12)


def st_check(model_dir, texts, refs, mode):
    """sentence-transformers' own Pooling + Normalize over the saved model
    (float32): max |difference| to our float64 formulas, or why it did not run."""
    try:
        from sentence_transformers import SentenceTransformer, models
        tr = models.Transformer(model_dir)
        st = SentenceTransformer(modules=[tr, models.Pooling(N_EMBD, pooling_mode=mode), models.Normalize()],
                                 device="cpu")
        got = st.encode(texts, convert_to_numpy=True, batch_size=len(texts))
        return float(np.max(np.abs(got.astype(np.float64) - np.array(refs))))
    except Exception as e:  # noqa: BLE001 - optional cross-check
        return f"not run: {type(e).__name__}: {e}"[:300]


def fmt(a):
    return [float(f"{x:.12g}") for x in np.asarray(a).ravel().tolist()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/hf")
    ap.add_argument("--tmp", default="/tmp/bert-ref")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.tmp, exist_ok=True)
    torch.set_num_threads(1)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")

    vocab = vocab_list()
    tok = make_tokenizer(vocab, args.tmp)
    texts = TEXTS + [long_text(tok)]
    ids = [[int(x) for x in tok(t)["input_ids"]] for t in texts]
    for t, i in zip(texts, ids):
        print(f"  {len(i):3d} tokens: {t[:50]!r} -> {i[:12]}")
    assert len(ids[-1]) <= N_CTX and len(ids[-1]) >= N_CTX - 2

    for name, f16, pooling in (("bert-tiny", False, POOLING_CLS), ("bert-tiny-f16", True, POOLING_MEAN)):
        model = build_model(len(vocab))
        print("  parameters:", [n for n, _ in model.named_parameters()][:6], "...")
        if f16:
            round_f16(model)
        f32_model_dir = os.path.join(args.tmp, name)
        model.save_pretrained(f32_model_dir)
        tok.save_pretrained(f32_model_dir)
        f32_hidden = [hidden_states(model, i, patched=False) for i in ids]
        export_gguf(model, vocab, os.path.join(args.out, name + ".gguf"), f16, pooling)
        model = model.double()
        stock = [hidden_states(model, i, patched=False) for i in ids]
        CALLS["attn"] = 0
        try:  # the float64 softmax is a guard; a version whose hook differs keeps stock
            exact = [hidden_states(model, i, patched=True) for i in ids]
            patched = CALLS["attn"] == N_LAYER * len(ids)
        except Exception as e:  # noqa: BLE001
            print(f"  float64 attention patch failed ({type(e).__name__}: {e}); using stock float64")
            exact, patched = stock, False
        stock_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(exact, stock))
        f32_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(exact, f32_hidden))
        cls = [pool(h, "cls") for h in exact]
        mean = [pool(h, "mean") for h in exact]
        doc = {
            "model": name + ".gguf",
            "arch": "bert",
            "weights": "F16" if f16 else "F32",
            "pooling_type": pooling,
            "n_embd": N_EMBD,
            "n_ctx": N_CTX,
            "layout": "per case: tokens = Hugging Face ids ([CLS] ... [SEP]); hidden = last hidden "
                      "states [n_tokens][n_embd] flattened row-major; cls / mean = pooled and "
                      "L2-normalized (v / max(|v|, 1e-12)), token types 0, positions 0..n-1",
            "cases": [{"text": t, "tokens": i, "hidden": fmt(h), "cls": fmt(c), "mean": fmt(m)}
                      for t, i, h, c, m in zip(texts, ids, exact, cls, mean)],
            "generator": {
                "script": "tools/hf-reference/make_bert_reference.py",
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "seed": SEED,
                "float64_softmax_patched": patched,
                "hf_stock_float64_max_abs_diff": stock_diff,
                "hf_float32_max_abs_diff": f32_diff,
                "sentence_transformers_cls_max_abs_diff": st_check(f32_model_dir, texts, cls, "cls"),
                "sentence_transformers_mean_max_abs_diff": st_check(f32_model_dir, texts, mean, "mean"),
            },
        }
        with open(os.path.join(args.out, name + ".embeddings.json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        print(f"{name}: patched {patched}, |stock-exact| {stock_diff:.2e}, |f32-exact| {f32_diff:.2e}, "
              f"st {doc['generator']['sentence_transformers_cls_max_abs_diff']} / "
              f"{doc['generator']['sentence_transformers_mean_max_abs_diff']}")


if __name__ == "__main__":
    main()
