#!/usr/bin/env python3
# Independent check of the reference data in tests/data/hf/: reads each GGUF
# file with its own reader (not gguf_writer.py), runs the model in float64 with
# numpy using the GGUF conventions, and compares with the stored HF logits.
#
# Usage: python3 tools/hf-reference/check_numpy.py tests/data/hf
# Exits 1 if any model differs by more than --tol (default 1e-8) anywhere.
#
# GGUF conventions used here (the ones kiln must follow):
#   * tensors: ne[0] is the fastest-varying dimension, so a matrix stored with
#     ne = [in, out] is the row-major numpy array [out, in]; y = x @ W.T;
#   * rope, `llama`: rotate adjacent pairs (2i, 2i+1) of each head;
#     `qwen2`/`qwen3`: rotate (i, i + n_rot/2) ("NeoX" order);
#     pair i turns by pos * freq_base^(-2i/n_rot) / rope_freqs[i] (rope_freqs
#     only when the tensor is present);
#   * GQA: query head h reads kv head h // (n_head / n_head_kv);
#   * qwen3: attn_q_norm / attn_k_norm are RMS norms over each head's vector,
#     applied before rope;
#   * no output.weight: the output projection is token_embd.weight.
# It also reports a float32 pass (to size kiln's tolerance) and, as negative
# controls, each model with the other rope pairing and, where present, without
# rope_freqs: those errors must be large.

import argparse
import glob
import json
import os
import struct
import sys

import numpy as np

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_TENSOR_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2")}


class _Buf:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take("<Q")
        s = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def value(self, t):
        if t == _STRING:
            return self.string()
        if t == _ARRAY:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        return self.take(_SCALARS[t])


def read_gguf(path):
    """Returns (metadata dict, {name: float64 array in numpy/PyTorch shape order})."""
    with open(path, "rb") as f:
        b = _Buf(f.read())
    assert b.data[:4] == b"GGUF", "bad magic"
    b.pos = 4
    version, n_tensors, n_kv = b.take("<I"), b.take("<Q"), b.take("<Q")
    assert version == 3, version
    meta = {}
    for _ in range(n_kv):
        key = b.string()
        meta[key] = b.value(b.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = b.string()
        nd = b.take("<I")
        ne = [b.take("<Q") for _ in range(nd)]
        infos.append((name, ne, b.take("<I"), b.take("<Q")))
    align = meta.get("general.alignment", 32)
    data_start = b.pos + (-b.pos) % align
    tensors = {}
    for name, ne, t, off in infos:
        assert off % align == 0, f"{name}: misaligned"
        dt = _TENSOR_DTYPES[t]
        count = int(np.prod(ne))
        raw = np.frombuffer(b.data, dtype=dt, count=count, offset=data_start + off)
        tensors[name] = raw.reshape(list(reversed(ne))).astype(np.float64)
    return meta, tensors


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rope(v, cos, sin, n_rot, neox):
    """v [n, heads, head_dim]; cos/sin [n, n_rot/2]."""
    out = v.copy()
    c, s = cos[:, None, :], sin[:, None, :]
    if neox:
        a, b = v[..., :n_rot // 2], v[..., n_rot // 2:n_rot]
        out[..., :n_rot // 2] = a * c - b * s
        out[..., n_rot // 2:n_rot] = b * c + a * s
    else:
        a, b = v[..., 0:n_rot:2], v[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * c - b * s
        out[..., 1:n_rot:2] = b * c + a * s
    return out


def forward(meta, t, tokens, flip_rope=False, use_rope_freqs=True, dtype=np.float64):
    """Logits [n_tokens, n_vocab]. dtype=np.float32 gives a plain float32 pass
    (float64 rope angles), to size what a float32 engine should expect."""
    t = {k: v.astype(dtype) for k, v in t.items()}
    arch = meta["general.architecture"]
    hp = lambda k, d=None: meta.get(f"{arch}.{k}", d)  # noqa: E731
    n_embd, n_layer = hp("embedding_length"), hp("block_count")
    n_head, n_head_kv = hp("attention.head_count"), hp("attention.head_count_kv")
    head_dim = hp("attention.key_length", n_embd // n_head)
    n_rot = hp("rope.dimension_count", head_dim)
    eps = hp("attention.layer_norm_rms_epsilon")
    neox = {"llama": False, "qwen2": True, "qwen3": True}[arch] != flip_rope

    n = len(tokens)
    freqs = hp("rope.freq_base", 10000.0) ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if use_rope_freqs and "rope_freqs.weight" in t:
        freqs = freqs / t["rope_freqs.weight"]
    ang = np.arange(n, dtype=np.float64)[:, None] * freqs[None, :]
    cos, sin = np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)
    causal = np.tril(np.ones((n, n), dtype=bool))
    group = n_head // n_head_kv

    x = t["token_embd.weight"][tokens]  # [n, n_embd]
    for i in range(n_layer):
        w = lambda s: t[f"blk.{i}.{s}"]  # noqa: E731
        h = rms_norm(x, w("attn_norm.weight"), eps)
        q, k, v = h @ w("attn_q.weight").T, h @ w("attn_k.weight").T, h @ w("attn_v.weight").T
        if f"blk.{i}.attn_q.bias" in t:
            q, k, v = q + w("attn_q.bias"), k + w("attn_k.bias"), v + w("attn_v.bias")
        q = q.reshape(n, n_head, head_dim)
        k = k.reshape(n, n_head_kv, head_dim)
        v = v.reshape(n, n_head_kv, head_dim)
        if f"blk.{i}.attn_q_norm.weight" in t:
            q = rms_norm(q, w("attn_q_norm.weight"), eps)
            k = rms_norm(k, w("attn_k_norm.weight"), eps)
        q, k = rope(q, cos, sin, n_rot, neox), rope(k, cos, sin, n_rot, neox)
        out = np.empty((n, n_head, head_dim), dtype=dtype)
        for hh in range(n_head):
            kv = hh // group
            sc = (q[:, hh, :] @ k[:, kv, :].T) / dtype(np.sqrt(head_dim))  # [n, n]
            sc = np.where(causal, sc, -np.inf)
            p = np.exp(sc - sc.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            out[:, hh, :] = p @ v[:, kv, :]
        x = x + out.reshape(n, n_head * head_dim) @ w("attn_output.weight").T
        h = rms_norm(x, w("ffn_norm.weight"), eps)
        g = h @ w("ffn_gate.weight").T
        x = x + ((g / (1.0 + np.exp(-g))) * (h @ w("ffn_up.weight").T)) @ w("ffn_down.weight").T
    x = rms_norm(x, t["output_norm.weight"], eps)
    logits = x @ t.get("output.weight", t["token_embd.weight"]).T  # [n, n_vocab]
    assert logits.dtype == dtype
    return logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default="tests/data/hf")
    ap.add_argument("--tol", type=float, default=1e-8)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.dir, "*.logits.json")))
    if not files:
        print(f"no *.logits.json in {args.dir}")
        return 1
    ok = True
    print(f"{'model':28s} {'max|HF-numpy|':>14s} {'max|logit|':>10s} {'argmax':>7s} "
          f"{'float32 pass':>12s} {'other rope pairing':>19s} {'no rope_freqs':>14s}")
    for jf in files:
        with open(jf) as f:
            ref = json.load(f)
        meta, t = read_gguf(os.path.join(args.dir, ref["model"]))
        want = np.array(ref["logits"], dtype=np.float64)
        got = forward(meta, t, ref["tokens"])
        diff = float(np.max(np.abs(got - want)))
        same_argmax = int(np.sum(got.argmax(-1) == want.argmax(-1)))
        f32 = float(np.max(np.abs(forward(meta, t, ref["tokens"], dtype=np.float32) - want)))
        flipped = float(np.max(np.abs(forward(meta, t, ref["tokens"], flip_rope=True) - want)))
        no_ff = "-"
        if "rope_freqs.weight" in t:
            no_ff = f"{np.max(np.abs(forward(meta, t, ref['tokens'], use_rope_freqs=False) - want)):.3g}"
        good = diff <= args.tol and same_argmax == len(want) and flipped > 1e-3
        ok &= good
        print(f"{os.path.basename(ref['model']):28s} {diff:14.3e} {np.max(np.abs(want)):10.3f} "
              f"{same_argmax:3d}/{len(want):<3d} {f32:12.2e} {flipped:19.3g} {no_ff:>14s}  {'ok' if good else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
