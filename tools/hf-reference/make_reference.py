#!/usr/bin/env python3
# Builds tiny random Hugging Face models (llama, llama with Llama 3.1 rope
# scaling, qwen2, qwen3), exports each to GGUF as llama.cpp's converter would,
# and stores their float64 logits for a fixed token sequence (tests/data/hf/).
#
# Needs PyTorch, transformers and numpy (made with transformers 5.17; the 4.x
# config path, rope_theta + rope_scaling, is untested). CPU, a few seconds.
# Usage: python3 tools/hf-reference/make_reference.py --out tests/data/hf
#
# Why the forward pass is patched: even after model.double(), transformers
# computes RMSNorm, the rotary cos/sin table and the attention softmax in
# float32. The reference replaces exactly those three pieces with float64
# versions of the same formulas (the "stock" run, unpatched, is kept for
# comparison and its distance to the exact run is recorded), so that an
# independent float64 forward pass over the GGUF file must agree to ~1e-11.

import argparse
import json
import math
import os
import sys
import types

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_tokenizer  # noqa: E402
from gguf_writer import GGML_F16, GGML_F32, T_INT32, T_STRING, GGUFWriter  # noqa: E402

N_VOCAB = 512
N_EMBD = 64
N_FF = 128
N_LAYER = 2
N_CTX = 512

# Fixed input ids (510 = <|bos|>): 32 positions, so that the fast rotary pairs
# turn through several full periods; repeats (42) and both ends of the vocabulary.
TOKENS = [510, 0, 511, 17, 256, 300, 42, 42, 7, 480, 99, 123, 509, 64, 128, 255,
          3, 77, 401, 222, 150, 9, 333, 444, 12, 500, 88, 271, 190, 5, 366, 42]

# One entry per reference model. rope_scaling follows the Hugging Face config
# field of the same name. original_max_position_embeddings is set far below
# the usual 8192 so that the scaled frequencies turn by whole radians within
# 32 positions: rope_freqs must then visibly change the logits.
MODELS = [
    dict(name="llama-gqa", arch="llama", n_head=4, n_head_kv=2, head_dim=16, tie=False,
         rope_theta=10000.0, eps=1e-5, seed=1001),
    dict(name="llama31-rope-scaled", arch="llama", n_head=4, n_head_kv=2, head_dim=16, tie=True,
         rope_theta=500000.0, eps=1e-5, seed=1002,
         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                           high_freq_factor=4.0, original_max_position_embeddings=64)),
    dict(name="qwen2-bias", arch="qwen2", n_head=4, n_head_kv=2, head_dim=None, tie=True,
         rope_theta=1000000.0, eps=1e-6, seed=1003),
    # head_dim 32 != n_embd / n_head = 16, as in real Qwen3 models.
    dict(name="qwen3-qknorm", arch="qwen3", n_head=4, n_head_kv=2, head_dim=32, tie=False,
         rope_theta=1000000.0, eps=1e-6, seed=1004),
]
# An F16 copy of this model (2-D weights F16, norms F32, as the converter's --outtype f16).
F16_OF = "llama-gqa"


# --------------------------------------------------------------------------
# Model construction

def make_config(spec):
    arch = spec["arch"]
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "qwen3": transformers.Qwen3Config}[arch]
    kw = dict(vocab_size=N_VOCAB, hidden_size=N_EMBD, intermediate_size=N_FF,
              num_hidden_layers=N_LAYER, num_attention_heads=spec["n_head"],
              num_key_value_heads=spec["n_head_kv"], max_position_embeddings=N_CTX,
              rms_norm_eps=spec["eps"], tie_word_embeddings=spec["tie"], hidden_act="silu",
              bos_token_id=N_VOCAB - 2, eos_token_id=N_VOCAB - 1)
    if spec["head_dim"] is not None:
        kw["head_dim"] = spec["head_dim"]
    if arch in ("llama", "qwen3"):
        kw["attention_bias"] = False
    scaling = spec.get("rope_scaling")
    if scaling:
        # Also at the top level: some versions of llama.cpp's converter read it only there.
        kw["original_max_position_embeddings"] = scaling["original_max_position_embeddings"]
    rope = {"rope_type": "default", "rope_theta": spec["rope_theta"]}
    rope.update(scaling or {})
    if "rope_parameters" in cls().to_dict():  # transformers 5.x
        cfg = cls(**kw, rope_parameters=rope)
    else:  # transformers 4.x
        cfg = cls(**kw, rope_theta=spec["rope_theta"], rope_scaling=dict(scaling) if scaling else None)
    return cfg


def randomize(model, seed, tie):
    """Float32-representable random weights with O(1) activations and logits of
    a few units, so softmaxes and argmaxes are neither flat nor saturated."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied lm_head is not listed
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                v = 1.0 + 0.1 * r
            elif name.endswith(".bias"):
                v = 0.2 * r
            elif "embed_tokens" in name:
                v = r * (0.25 if tie else 1.0)
            elif name == "lm_head.weight":
                v = r * (2.0 / math.sqrt(p.shape[1]))
            else:
                v = r / math.sqrt(p.shape[1])
            p.copy_(v.to(p.dtype))


def build_model(spec):
    cfg = make_config(spec)
    torch.manual_seed(spec["seed"])
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model.eval()
    randomize(model, spec["seed"], spec["tie"])
    model = model.double()
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tied == spec["tie"], f"{spec['name']}: tie_word_embeddings not honoured"
    return model


# --------------------------------------------------------------------------
# Rotary frequencies

def llama3_rope_factors(head_dim, base, scaling):
    """Per-pair frequency divisors for Llama 3.1 rope scaling, the way llama.cpp's
    converter computes rope_freqs.weight (described in our own words):
    take the unscaled frequency of each rotary pair, f_i = base^(-2i/head_dim),
    and its wavelength 2*pi/f_i. Pairs whose wavelength is shorter than
    original_max_position_embeddings / high_freq_factor keep their frequency
    (divisor 1); pairs whose wavelength is longer than
    original_max_position_embeddings / low_freq_factor are slowed down by the
    full `factor`; in between, with s = (original_max_position_embeddings /
    wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor), the
    new frequency is the blend (1 - s) * f_i / factor + s * f_i, i.e. the divisor
    is 1 / ((1 - s) / factor + s). The converter does this in float32 and stores
    the divisors as an F32 tensor; at run time llama.cpp divides each pair's
    rotation frequency by its entry. Returns the float32 divisors."""
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor = scaling["factor"]
    lo, hi = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    out = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / hi:
            out.append(1.0)
        elif wavelen > old_ctx / lo:
            out.append(factor)
        else:
            s = (old_ctx / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1.0 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def exact_inv_freq(spec, head_dim):
    """float64 rotary frequencies as the GGUF file defines them: base^(-2i/d),
    divided by the stored float32 rope_freqs divisors where there are some."""
    inv = spec["rope_theta"] ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if spec.get("rope_scaling"):
        inv = inv / llama3_rope_factors(head_dim, spec["rope_theta"], spec["rope_scaling"]).astype(np.float64)
    return torch.from_numpy(inv)


# --------------------------------------------------------------------------
# float64 forward pass

CALLS = {"attn": 0, "norm": 0, "rope": 0}


def attention_f64(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention with the softmax kept in float64. Causal mask built here:
    the reference feeds one unpadded sequence. query [b, n_head, n, d],
    key/value [b, n_head_kv, n, d]; returns [b, n, n_head, d]."""
    CALLS["attn"] += 1
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)    # query head h uses kv head h // groups
    value = value.repeat_interleave(groups, dim=1)
    scores = (query @ key.transpose(-1, -2)) * scaling
    n_q, n_k = scores.shape[-2], scores.shape[-1]
    causal = torch.ones(n_q, n_k, dtype=torch.bool).tril(diagonal=n_k - n_q)
    scores = scores.masked_fill(~causal, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return (probs @ value).transpose(1, 2).contiguous(), probs


def rms_norm_f64(self, x):
    CALLS["norm"] += 1
    eps = getattr(self, "variance_epsilon", getattr(self, "eps", None))
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def make_rotary_f64(inv_freq):
    def forward(self, x, position_ids, *args, **kwargs):
        CALLS["rope"] += 1
        ang = position_ids.to(torch.float64)[..., None] * inv_freq.to(x.device)  # [b, n, d/2]
        emb = torch.cat((ang, ang), dim=-1)  # HF pairs dimension i with i + d/2
        scale = getattr(self, "attention_scaling", 1.0)
        return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)
    return forward


def patched_modules():
    mods = []
    for name in ("llama", "qwen2", "qwen3"):
        mods.append(__import__(f"transformers.models.{name}.modeling_{name}", fromlist=["x"]))
    return mods


def run_exact(model, spec, head_dim):
    """Logits [n_tokens, n_vocab] in float64 throughout."""
    inv = exact_inv_freq(spec, head_dim)
    saved = []
    for mod in patched_modules():
        saved.append((mod, mod.eager_attention_forward))
        mod.eager_attention_forward = attention_f64
    for m in model.modules():
        cname = type(m).__name__
        if cname.endswith("RMSNorm"):
            m.forward = types.MethodType(rms_norm_f64, m)
        elif cname.endswith("RotaryEmbedding"):
            m.forward = types.MethodType(make_rotary_f64(inv), m)
    for k in CALLS:
        CALLS[k] = 0
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([TOKENS]), use_cache=False).logits[0]
    finally:
        for mod, fn in saved:
            mod.eager_attention_forward = fn
        for m in model.modules():
            m.__dict__.pop("forward", None)
    # Each patched piece must actually have run (guards against a transformers
    # version that routes around it).
    n_norm = N_LAYER * (2 + (2 if spec["arch"] == "qwen3" else 0)) + 1
    assert CALLS["attn"] == N_LAYER and CALLS["norm"] == n_norm and CALLS["rope"] >= 1, CALLS
    return logits.numpy()


def run_stock(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor([TOKENS]), use_cache=False).logits[0].numpy()


# --------------------------------------------------------------------------
# GGUF export

def permute_qk(w, n_head):
    """llama.cpp's converter, for the `llama` architecture: Hugging Face rotates
    dimension i of each head with i + head_dim/2; llama.cpp's `llama` rope
    rotates adjacent pairs (2i, 2i+1). Reordering the rows of each head as
    [0, d/2, 1, d/2+1, ...] makes both compute the same thing:
    reshape(n_head, 2, head_dim/2, in).swapaxes(1, 2).reshape(original)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_gguf(model, spec, head_dim, path, f16):
    cfg = model.config
    cfg_dict = cfg.to_dict()
    arch = spec["arch"]
    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    wtype = GGML_F16 if f16 else GGML_F32

    def w2(name, arr):  # 2-D weights follow the output type; 1-D tensors stay F32
        gw.add_tensor(name, arr, wtype)

    gw = GGUFWriter(arch)
    gw.add_string("general.type", "model")
    gw.add_string("general.name", os.path.splitext(os.path.basename(path))[0])
    gw.add_uint32(f"{arch}.block_count", N_LAYER)
    gw.add_uint32(f"{arch}.context_length", N_CTX)
    gw.add_uint32(f"{arch}.embedding_length", N_EMBD)
    gw.add_uint32(f"{arch}.feed_forward_length", N_FF)
    gw.add_uint32(f"{arch}.attention.head_count", spec["n_head"])
    gw.add_uint32(f"{arch}.attention.head_count_kv", spec["n_head_kv"])
    gw.add_float32(f"{arch}.rope.freq_base", spec["rope_theta"])
    gw.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", spec["eps"])
    # The converter writes key/value length whenever config.json has head_dim.
    if cfg_dict.get("head_dim") is not None:
        gw.add_uint32(f"{arch}.attention.key_length", head_dim)
        gw.add_uint32(f"{arch}.attention.value_length", head_dim)
    gw.add_uint32("general.file_type", 1 if f16 else 0)  # MOSTLY_F16 / ALL_F32
    if arch == "llama":  # LlamaModel.set_gguf_parameters adds these two
        gw.add_uint32(f"{arch}.vocab_size", N_VOCAB)
        gw.add_uint32(f"{arch}.rope.dimension_count", head_dim)
    gw.add_uint32("general.quantization_version", 2)

    tokens, types_, merges, bos, eos = tiny_tokenizer.build(N_VOCAB)
    gw.add_string("tokenizer.ggml.model", "gpt2")
    gw.add_string("tokenizer.ggml.pre", "default")
    gw.add_array("tokenizer.ggml.tokens", T_STRING, tokens)
    gw.add_array("tokenizer.ggml.token_type", T_INT32, types_)
    gw.add_array("tokenizer.ggml.merges", T_STRING, merges)
    gw.add_uint32("tokenizer.ggml.bos_token_id", bos)
    gw.add_uint32("tokenizer.ggml.eos_token_id", eos)

    if spec.get("rope_scaling"):
        gw.add_tensor("rope_freqs.weight", llama3_rope_factors(head_dim, spec["rope_theta"], spec["rope_scaling"]))
    w2("token_embd.weight", sd["model.embed_tokens.weight"])  # [n_vocab, n_embd] -> ne [n_embd, n_vocab]
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if arch == "llama":
            q, k = permute_qk(q, spec["n_head"]), permute_qk(k, spec["n_head_kv"])
        gw.add_tensor(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        w2(b + "attn_q.weight", q)
        w2(b + "attn_k.weight", k)
        w2(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        if arch == "qwen2":
            for t in ("q", "k", "v"):
                gw.add_tensor(b + f"attn_{t}.bias", sd[p + f"self_attn.{t}_proj.bias"])
        if arch == "qwen3":
            gw.add_tensor(b + "attn_q_norm.weight", sd[p + "self_attn.q_norm.weight"])
            gw.add_tensor(b + "attn_k_norm.weight", sd[p + "self_attn.k_norm.weight"])
        w2(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        gw.add_tensor(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w2(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w2(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w2(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    gw.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not spec["tie"]:  # missing output.weight means: reuse token_embd.weight
        w2("output.weight", sd["lm_head.weight"])
    gw.write(path)


# --------------------------------------------------------------------------

def head_dim_of(spec):
    return spec["head_dim"] or N_EMBD // spec["n_head"]


def check_inv_freq(model, spec, head_dim):
    """HF's own float32 rotary frequencies must match the GGUF-defined ones: this
    proves the config was read as intended and the rope_freqs formula matches
    HF's llama3 scaling."""
    hf = model.model.rotary_emb.inv_freq.detach().cpu().double().numpy()
    ours = exact_inv_freq(spec, head_dim).numpy()
    rel = float(np.max(np.abs(hf - ours) / ours))
    assert rel < 1e-6, f"{spec['name']}: HF inv_freq {hf} vs ours {ours}"
    return rel


def save_logits(path, spec, gguf_name, weights, logits, stock_diff, inv_rel):
    doc = {
        "model": gguf_name,
        "arch": spec["arch"],
        "weights": weights,
        "n_vocab": N_VOCAB,
        "tokens": TOKENS,
        "layout": "logits[i] = the model's logits (all n_vocab) after tokens[0..i], positions 0..i",
        "logits": [[float(f"{v:.12g}") for v in row] for row in logits.tolist()],
        "generator": {
            "script": "tools/hf-reference/make_reference.py",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "seed": spec["seed"],
            "hf_inv_freq_max_rel_diff": inv_rel,
            "hf_stock_float64_max_abs_diff": stock_diff,
        },
    }
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="tests/data/hf", help="output folder")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # fixed reduction order
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")

    jobs = []
    for spec in MODELS:
        jobs.append((spec, spec["name"], False))
        if spec["name"] == F16_OF:
            jobs.append((spec, spec["name"] + "-f16", True))
    for spec, name, f16 in jobs:
        head_dim = head_dim_of(spec)
        model = build_model(spec)
        if f16:
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    if p.dim() == 2:  # what the F16 file stores as F16
                        p.copy_(p.to(torch.float16).to(torch.float64))
        inv_rel = check_inv_freq(model, spec, head_dim)
        stock = run_stock(model)
        exact = run_exact(model, spec, head_dim)
        stock_diff = float(np.max(np.abs(stock - exact)))
        gguf_name = f"{name}.gguf"
        export_gguf(model, spec, head_dim, os.path.join(args.out, gguf_name), f16)
        save_logits(os.path.join(args.out, f"{name}.logits.json"), spec, gguf_name,
                    "F16" if f16 else "F32", exact, stock_diff, inv_rel)
        print(f"{name:24s} max|logit| {np.max(np.abs(exact)):7.3f}  "
              f"argmax {exact.argmax(-1)[:8].tolist()}...  |stock-exact| {stock_diff:.2e}  "
              f"inv_freq rel {inv_rel:.1e}")


if __name__ == "__main__":
    main()
