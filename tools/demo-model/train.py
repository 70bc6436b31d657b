#!/usr/bin/env python3
# Trains kiln's demo model in one command on one GPU: byte-level BPE tokenizer,
# a small Llama (Hugging Face transformers) on the King James Bible plus
# generated chat data (data.py), then writes into --out: the f16 GGUF (split
# in parts of < 16 MiB, see below), the perplexity/KL reference of the f16
# model on held-out text (reference.py), tokenizer test cases and a log.
#
#   tools/demo-model/extract_kjv.sh            # here: the text, with `bible`
#   python3 tools/demo-model/train.py --kjv out/demo-model/kjv.txt --out $OUT
#   python3 tools/demo-model/train.py ... --tiny   # CPU smoke test, a minute
#
# Reproducible from --seed given --steps (the default stops at a wall-clock
# budget instead, so the step count depends on the GPU; the log records it).

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402
import export_gguf  # noqa: E402
import reference  # noqa: E402
import tokenizer_bpe  # noqa: E402

# The shapes (about 13.9M parameters with tied embeddings). Widths are
# multiples of 256 so that every matrix row fits whole q4_k/q6_k super-blocks.
FULL = dict(n_vocab=4096, n_embd=512, n_layer=6, n_head=8, n_head_kv=4, n_ff=768, n_ctx=512)
TINY = dict(n_vocab=600, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=256, n_ctx=128)
ROPE_THETA = 10000.0
RMS_EPS = 1e-5


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def make_model(shape, seed):
    cfg_kw = dict(vocab_size=shape["n_vocab"], hidden_size=shape["n_embd"],
                  intermediate_size=shape["n_ff"], num_hidden_layers=shape["n_layer"],
                  num_attention_heads=shape["n_head"], num_key_value_heads=shape["n_head_kv"],
                  max_position_embeddings=shape["n_ctx"], rms_norm_eps=RMS_EPS,
                  tie_word_embeddings=True, hidden_act="silu", attention_bias=False,
                  mlp_bias=False, bos_token_id=0, eos_token_id=2)
    cls = transformers.LlamaConfig
    if "rope_parameters" in cls().to_dict():  # transformers 5.x
        cfg = cls(**cfg_kw, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA})
    else:
        cfg = cls(**cfg_kw, rope_theta=ROPE_THETA)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


class Streams:
    """The training token streams, on the device. Bible: chapters joined by
    <|endoftext|>, every target trained, windows start anywhere. Chat: one
    conversation after another, only the assistant's answers trained, windows
    start at a conversation so position 0 looks like a served prompt."""

    def __init__(self, tok, chapters_train, n_chats, seed, device):
        eot = tok.token_to_id(data.EOT)
        enc = tok.encode_batch([data.chapter_text(ch) for ch in chapters_train])
        bible = []
        for e in enc:
            bible += e.ids + [eot]
        self.bible = torch.tensor(bible, dtype=torch.long, device=device)
        t0 = time.time()
        chats = data.chat_examples(chapters_train, n_chats, seed)
        log(f"{len(chats)} chats generated in {time.time() - t0:.1f} s")
        prompts = tok.encode_batch([p for p, _ in chats])
        answers = tok.encode_batch([a for _, a in chats])
        ids, mask, starts = [], [], []
        for p, a in zip(prompts, answers):
            starts.append(len(ids))
            ids += p.ids + a.ids
            mask += [0] * len(p.ids) + [1] * len(a.ids)
        self.chat = torch.tensor(ids, dtype=torch.long, device=device)
        self.chat_mask = torch.tensor(mask, dtype=torch.float32, device=device)
        self.chat_starts = torch.tensor(starts, dtype=torch.long, device=device)
        log(f"tokens: bible {len(self.bible)}, chat {len(self.chat)} "
            f"({int(self.chat_mask.sum())} trained), {len(chats)} conversations")

    def batch(self, gen, n_seq, n_ctx, p_bible):
        """x, y [n_seq, n_ctx] token ids; w [n_seq, n_ctx] target weights."""
        dev = self.bible.device
        n_b = int(round(n_seq * p_bible))
        n_c = n_seq - n_b
        ar = torch.arange(n_ctx + 1, device=dev)
        sb = torch.randint(0, len(self.bible) - n_ctx - 1, (n_b,), generator=gen, device=dev)
        limit = torch.tensor([len(self.chat) - n_ctx - 1], device=dev)
        last_ok = int(torch.searchsorted(self.chat_starts, limit)[0])
        sc = self.chat_starts[torch.randint(0, last_ok, (n_c,), generator=gen, device=dev)]
        tb = self.bible[sb[:, None] + ar]
        tc = self.chat[sc[:, None] + ar]
        wc = self.chat_mask[sc[:, None] + ar][:, 1:]
        t = torch.cat([tb, tc])
        w = torch.cat([torch.ones(n_b, n_ctx, device=dev), wc])
        return t[:, :-1], t[:, 1:], w


def train(model, streams, args, shape, device):
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.1, fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    budget = args.minutes * 60
    t0 = time.time()
    step, hist, losses = 0, [], []
    model.train()
    while True:
        elapsed = time.time() - t0
        frac = step / args.steps if args.steps else elapsed / budget
        if frac >= 1.0:
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, w = streams.batch(gen, args.batch, shape["n_ctx"], args.p_bible)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=x).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              reduction="none").view_as(w)
        loss = (nll * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == 1:
            # Separate figures for the text and the chat answers.
            n_b = int(round(args.batch * args.p_bible))
            lb = nll[:n_b].mean().item() if n_b else float("nan")
            lc = ((nll[n_b:] * w[n_b:]).sum() / w[n_b:].sum()).item()
            losses.append(loss.item())
            hist.append(dict(step=step, t=round(time.time() - t0, 1), lr=lr, loss=round(loss.item(), 4),
                             loss_text=round(lb, 4), loss_answers=round(lc, 4)))
            if step % 250 == 0 or step == 1:
                log(f"step {step} t {time.time() - t0:.0f}s lr {lr:.2e} loss {loss.item():.4f} "
                    f"text {lb:.3f} answers {lc:.3f}")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return dict(steps=step, seconds=round(time.time() - t0, 1),
                tokens=step * args.batch * shape["n_ctx"],
                final_loss=round(float(np.mean(losses[-5:])), 4), history=hist)


@torch.no_grad()
def greedy_arithmetic(model, tok, problems, device, max_new=24):
    """Accuracy of greedy chat answers in PyTorch (kiln's tests redo this
    through the server on the GGUF files). An answer such as
    "1113 + 9555 = 10668" is 17 tokens (one per digit), hence max_new 24."""
    model.eval()
    im_end = tok.token_to_id(data.IM_END)
    ok, by_op, wrong = 0, {"+": [0, 0], "-": [0, 0]}, []
    for p in problems:
        prompt = data.render_chat([{"role": "user", "content": p["question"]}], True)
        ids = torch.tensor([tok.encode(prompt).ids], device=device)
        out = model.generate(input_ids=ids, max_new_tokens=max_new, do_sample=False,
                             eos_token_id=im_end, pad_token_id=im_end)
        text = tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
        good = text.strip().endswith(f"= {p['answer']}")
        ok += good
        by_op[p["op"]][0] += good
        by_op[p["op"]][1] += 1
        if not good and len(wrong) < 10:
            wrong.append(f"{p['question']} -> {text.strip()!r} (want {p['answer']})")
    log("greedy arithmetic by op: " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in by_op.items()))
    for w in wrong:
        log("  wrong: " + w)
    return ok / max(1, len(problems))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kjv", default="out/demo-model/kjv.txt")
    ap.add_argument("--out", default=os.environ.get("OUT", "out/demo-model/run"))
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--minutes", type=float, default=6.75, help="training wall-clock budget")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count instead of --minutes")
    ap.add_argument("--batch", type=int, default=96, help="sequences per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--p-bible", type=float, default=0.03, help="share of sequences from the text (0.03: about 10 passes over it; more memorizes)")
    ap.add_argument("--n-chats", type=int, default=2_500_000)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test of the whole pipeline")
    args = ap.parse_args()
    shape = TINY if args.tiny else FULL
    if args.tiny:
        args.steps, args.batch, args.n_chats, args.warmup = args.steps or 30, 8, 5000, 5
    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, device {gpu}")

    chapters = data.parse_kjv(open(args.kjv, encoding="utf-8").read())
    chapters_train, _ = data.split_chapters(chapters)
    t0 = time.time()
    tok = tokenizer_bpe.train(chapters_train, shape["n_vocab"], args.seed)
    log(f"tokenizer: {tok.get_vocab_size()} tokens in {time.time() - t0:.1f} s")
    tok.save(os.path.join(args.out, "tokenizer.json"))
    streams = Streams(tok, chapters_train, args.n_chats, args.seed, device)

    model = make_model(shape, args.seed).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters, {shape}")
    figures = train(model, streams, args, shape, device)
    log(f"trained {figures['steps']} steps in {figures['seconds']} s, final loss {figures['final_loss']}")

    # Everything after this point sees the weights exactly as the f16 GGUF holds them.
    model = model.float()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    model.eval()
    heldout_ids = tok.encode(data.heldout_text(chapters)).ids
    ref = reference.compute(model, heldout_ids, shape["n_ctx"], device)
    log(f"held-out perplexity (f16 weights): {ref['ppl']:.4f} over {ref['n_scored']} tokens")
    reference.write(os.path.join(args.out, "kiln-demo-reference.gguf"), ref, heldout_ids)

    problems = data.heldout_arithmetic(200 if not args.tiny else 5, seed=7)
    acc = greedy_arithmetic(model, tok, problems, device)
    log(f"held-out arithmetic, greedy in PyTorch: {acc:.2%} of {len(problems)}")

    gguf_path = os.path.join(args.out, "kiln-demo-f16.gguf")
    export_gguf.write(model, tok, shape, ROPE_THETA, RMS_EPS, gguf_path)
    tokenizer_bpe.write_cases(tok, os.path.join(args.out, "tokenizer-cases.json"))
    parts = export_gguf.split(gguf_path, 15 * 2**20)
    log(f"wrote {gguf_path} as {len(parts)} parts")

    info = dict(gpu=gpu, torch=torch.__version__, transformers=transformers.__version__,
                seed=args.seed, shape=shape, n_params=n_params, batch=args.batch, lr=args.lr,
                p_bible=args.p_bible, n_chats=args.n_chats, minutes=args.minutes,
                heldout_ppl_f16=ref["ppl"], heldout_scored=ref["n_scored"],
                torch_greedy_arith_acc=acc, **figures)
    with open(os.path.join(args.out, "train-log.json"), "w") as f:
        json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
