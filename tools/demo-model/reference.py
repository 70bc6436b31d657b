# Perplexity of the trained model on held-out text, and the reference that
# `kiln perplexity --kl-reference` compares quantized files and KV-cache types
# against without the f16 file: top-32 log-probabilities and the log-sum-exp
# of the logits at up to 2,000 held-out positions.
#
# Scoring (kiln perplexity does the same): windows of n_ctx tokens start every
# stride = n_ctx/2 tokens (a window must fit whole); each window scores its
# targets at positions n_ctx - stride .. n_ctx - 1, so every scored token
# sees at least n_ctx/2 tokens of context and none is scored twice.
#
# File (GGUF, general.architecture = "kiln-reference"):
#   reference.n_ctx, reference.stride      u32
#   reference.n_windows                    u32  windows in this file (the first ones)
#   reference.top_k                        u32  32
#   reference.ppl, reference.n_scored      f32/u32  over ALL windows of the held-out text
#   reference.ppl_windows                  f32  over the windows in this file
#   reference.tokens                       i32[] all held-out token ids (Hugging Face's)
#   tensor top_ids      F32 [n_pos, top_k]  token ids (exact in f32), by falling log-prob
#   tensor top_logprobs F32 [n_pos, top_k]  log-softmax at those ids
#   tensor lse          F32 [n_pos]         log-sum-exp of the raw logits
#   tensor target_nll   F32 [n_pos]         -log p(target)
# with n_pos = n_windows * stride, position order = window, then target position.

import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hf-reference"))
from gguf_writer import GGML_F32, T_INT32, GGUFWriter  # noqa: E402

TOP_K = 32
MAX_POSITIONS = 2000


def window_starts(n_tokens, n_ctx, stride):
    return list(range(0, n_tokens - n_ctx + 1, stride))


@torch.no_grad()
def compute(model, ids, n_ctx, device, batch=16):
    stride = n_ctx // 2
    starts = window_starts(len(ids), n_ctx, stride)
    n_ref = MAX_POSITIONS // stride
    ids_t = torch.tensor(ids, dtype=torch.long)
    nll_all, top_ids, top_lp, lse_all = [], [], [], []
    for i in range(0, len(starts), batch):
        s = starts[i:i + batch]
        x = torch.stack([ids_t[a:a + n_ctx] for a in s]).to(device)
        logits = model(input_ids=x).logits.float()[:, n_ctx - stride - 1:n_ctx - 1]  # [b, stride, V]
        lse = torch.logsumexp(logits, dim=-1)
        lp = logits - lse[..., None]
        tgt = x[:, n_ctx - stride:]
        nll = -lp.gather(-1, tgt[..., None])[..., 0]
        nll_all.append(nll.double().cpu())
        tv, ti = lp.topk(TOP_K, dim=-1)
        top_ids.append(ti.cpu())
        top_lp.append(tv.cpu())
        lse_all.append(lse.cpu())
    nll = torch.cat(nll_all).reshape(-1)
    ref = dict(n_ctx=n_ctx, stride=stride, n_windows=min(n_ref, len(starts)))
    n_pos = ref["n_windows"] * stride
    mean = nll.mean().item()
    # Standard error of the mean log-likelihood, carried to the perplexity.
    err = nll.std().item() / math.sqrt(len(nll))
    ref.update(ppl=math.exp(mean), ppl_err=math.exp(mean) * err, n_scored=len(nll),
               ppl_windows=math.exp(nll[:n_pos].mean().item()),
               top_ids=torch.cat(top_ids).reshape(-1, TOP_K)[:n_pos].numpy(),
               top_logprobs=torch.cat(top_lp).reshape(-1, TOP_K)[:n_pos].numpy(),
               lse=torch.cat(lse_all).reshape(-1)[:n_pos].numpy(),
               target_nll=nll[:n_pos].float().numpy())
    return ref


def write(path, ref, ids):
    gw = GGUFWriter("kiln-reference")
    gw.add_string("general.name", "kiln-demo f16 reference on held-out KJV text")
    for k in ("n_ctx", "stride", "n_windows", "n_scored"):
        gw.add_uint32(f"reference.{k}", ref[k])
    gw.add_uint32("reference.top_k", TOP_K)
    gw.add_float32("reference.ppl", ref["ppl"])
    gw.add_float32("reference.ppl_err", ref["ppl_err"])
    gw.add_float32("reference.ppl_windows", ref["ppl_windows"])
    gw.add_array("reference.tokens", T_INT32, [int(t) for t in ids])
    gw.add_tensor("top_ids", ref["top_ids"].astype(np.float32), GGML_F32)
    gw.add_tensor("top_logprobs", ref["top_logprobs"], GGML_F32)
    gw.add_tensor("lse", ref["lse"], GGML_F32)
    gw.add_tensor("target_nll", ref["target_nll"], GGML_F32)
    gw.write(path)
