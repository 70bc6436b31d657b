# Writes the demo model as a GGUF file the way llama.cpp's converter writes a
# Hugging Face Llama (tools/hf-reference: same writer, same Q/K permutation),
# in f16 (2-D weights f16, norms f32), with its tokenizer and chat template.

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hf-reference"))
from gguf_writer import GGML_F16, GGML_F32, T_INT32, T_STRING, GGUFWriter  # noqa: E402
from make_reference import permute_qk  # noqa: E402

import data  # noqa: E402
import tokenizer_bpe  # noqa: E402

TOKEN_NORMAL, TOKEN_CONTROL = 1, 3


def write(model, tok, shape, rope_theta, eps, path):
    arch = "llama"
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    n_layer, n_head, n_head_kv = shape["n_layer"], shape["n_head"], shape["n_head_kv"]
    head_dim = shape["n_embd"] // n_head
    gw = GGUFWriter(arch)
    gw.add_string("general.type", "model")
    gw.add_string("general.name", "kiln-demo")
    gw.add_string("general.description", "kiln's demo model: a small Llama trained on the King James "
                  "Bible and generated chats (arithmetic, word tasks); see models/README.md")
    gw.add_string("general.license", "kiln's terms (weights); training text: King James Bible, "
                  "public domain outside the UK (Crown rights apply there)")
    gw.add_uint32(f"{arch}.block_count", n_layer)
    gw.add_uint32(f"{arch}.context_length", shape["n_ctx"])
    gw.add_uint32(f"{arch}.embedding_length", shape["n_embd"])
    gw.add_uint32(f"{arch}.feed_forward_length", shape["n_ff"])
    gw.add_uint32(f"{arch}.attention.head_count", n_head)
    gw.add_uint32(f"{arch}.attention.head_count_kv", n_head_kv)
    gw.add_float32(f"{arch}.rope.freq_base", rope_theta)
    gw.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", eps)
    gw.add_uint32("general.file_type", 1)  # MOSTLY_F16
    gw.add_uint32(f"{arch}.vocab_size", shape["n_vocab"])
    gw.add_uint32(f"{arch}.rope.dimension_count", head_dim)
    gw.add_uint32("general.quantization_version", 2)

    tokens, merges, specials = tokenizer_bpe.vocab_and_merges(tok)
    types = [TOKEN_CONTROL if i in specials else TOKEN_NORMAL for i in range(len(tokens))]
    eot, _, im_end = specials
    gw.add_string("tokenizer.ggml.model", "gpt2")
    gw.add_string("tokenizer.ggml.pre", tokenizer_bpe.GGUF_PRE)
    gw.add_array("tokenizer.ggml.tokens", T_STRING, tokens)
    gw.add_array("tokenizer.ggml.token_type", T_INT32, types)
    gw.add_array("tokenizer.ggml.merges", T_STRING, merges)
    gw.add_uint32("tokenizer.ggml.bos_token_id", eot)
    gw.add_uint32("tokenizer.ggml.eos_token_id", im_end)
    gw.add_uint32("tokenizer.ggml.padding_token_id", eot)
    gw.add_bool("tokenizer.ggml.add_bos_token", False)
    gw.add_bool("tokenizer.ggml.add_eos_token", False)
    gw.add_string("tokenizer.chat_template", data.CHAT_TEMPLATE)

    def w2(name, arr):
        gw.add_tensor(name, arr, GGML_F16)

    w2("token_embd.weight", sd["model.embed_tokens.weight"])  # tied: no output.weight
    for i in range(n_layer):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        gw.add_tensor(b + "attn_norm.weight", sd[p + "input_layernorm.weight"], GGML_F32)
        w2(b + "attn_q.weight", permute_qk(sd[p + "self_attn.q_proj.weight"], n_head))
        w2(b + "attn_k.weight", permute_qk(sd[p + "self_attn.k_proj.weight"], n_head_kv))
        w2(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w2(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        gw.add_tensor(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], GGML_F32)
        w2(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w2(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w2(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    gw.add_tensor("output_norm.weight", sd["model.norm.weight"], GGML_F32)
    gw.write(path)


def split(path, part_bytes):
    """Cuts `path` into path.part0, path.part1, ... of at most part_bytes each
    (files come back from the GPU machine only below 16 MiB); `cat` rejoins them."""
    parts = []
    with open(path, "rb") as f:
        while True:
            chunk = f.read(part_bytes)
            if not chunk:
                break
            name = f"{path}.part{len(parts)}"
            with open(name, "wb") as g:
                g.write(chunk)
            parts.append(name)
    os.remove(path)
    return parts
