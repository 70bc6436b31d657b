#!/usr/bin/env python3
# Independent check of the BERT reference data (tests/data/hf/*.embeddings.json):
# reads each GGUF with check_numpy.py's reader (not the writer), runs the
# encoder in numpy with llama.cpp's BERT conventions and compares hidden
# states and pooled embeddings with the stored Hugging Face ones.
#
# Conventions (the ones kiln must follow): x = token_embd[id] + token_types[0]
# + position_embd[pos], LayerNorm (token_embd_norm); per block: bidirectional
# multi-head attention with biases, x = LayerNorm(x + attn) (attn_output_norm),
# x = LayerNorm(x + ffn_down(gelu_erf(ffn_up(x)))) (layer_output_norm);
# pooling_type 1 = mean, 2 = CLS; then v / max(|v|, 1e-12).
# Usage: python3 tools/hf-reference/check_bert_numpy.py tests/data/hf

import glob
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_numpy import read_gguf  # noqa: E402

_erf = np.vectorize(math.erf)


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def forward(meta, t, ids, gelu_tanh=False):
    n_head, n_layer = meta["bert.attention.head_count"], meta["bert.block_count"]
    eps = meta["bert.attention.layer_norm_epsilon"]
    n = len(ids)
    x = t["token_embd.weight"][ids] + t["token_types.weight"][0] + t["position_embd.weight"][:n]
    x = layer_norm(x, t["token_embd_norm.weight"], t["token_embd_norm.bias"], eps)
    d = x.shape[1] // n_head
    for i in range(n_layer):
        w = lambda s: t[f"blk.{i}.{s}"]  # noqa: E731
        lin = lambda s, v: v @ w(s + ".weight").T + w(s + ".bias")  # noqa: E731
        q, k, v = (lin(s, x).reshape(n, n_head, d) for s in ("attn_q", "attn_k", "attn_v"))
        out = np.empty_like(q)
        for h in range(n_head):
            sc = q[:, h] @ k[:, h].T / np.sqrt(d)
            p = np.exp(sc - sc.max(axis=-1, keepdims=True))
            out[:, h] = (p / p.sum(axis=-1, keepdims=True)) @ v[:, h]
        x = layer_norm(x + lin("attn_output", out.reshape(n, -1)), w("attn_output_norm.weight"),
                       w("attn_output_norm.bias"), eps)
        u = lin("ffn_up", x)
        if gelu_tanh:  # negative control: ggml's tanh approximation
            g = 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
        else:
            g = 0.5 * u * (1 + _erf(u / math.sqrt(2)))
        x = layer_norm(x + lin("ffn_down", g), w("layer_output_norm.weight"), w("layer_output_norm.bias"), eps)
    return x


def pool(h, mode):
    v = h[0] if mode == "cls" else h.mean(axis=0)
    return v / max(np.linalg.norm(v), 1e-12)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "tests/data/hf"
    files = sorted(glob.glob(os.path.join(d, "*.embeddings.json")))
    ok = bool(files)
    for jf in files:
        ref = json.load(open(jf))
        meta, t = read_gguf(os.path.join(d, ref["model"]))
        assert meta["bert.pooling_type"] == ref["pooling_type"]
        hid = emb = tanh = 0.0
        for c in ref["cases"]:
            h = forward(meta, t, c["tokens"])
            want = np.array(c["hidden"]).reshape(h.shape)
            hid = max(hid, float(np.max(np.abs(h - want))))
            for mode in ("cls", "mean"):
                emb = max(emb, float(np.max(np.abs(pool(h, mode) - np.array(c[mode])))))
            tanh = max(tanh, float(np.max(np.abs(forward(meta, t, c["tokens"], True) - want))))
        good = hid < 1e-9 and emb < 1e-9 and tanh > 1e-5
        ok &= good
        print(f"{ref['model']:22s} max|hidden| diff {hid:.2e}, max|embedding| diff {emb:.2e}, "
              f"tanh-GELU control {tanh:.2e}  {'ok' if good else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
