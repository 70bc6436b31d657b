# A small byte-level BPE vocabulary (GGUF "gpt2" tokenizer model) for the tiny
# reference models, so that their GGUF files carry a usable tokenizer. Pure Python.
#
# Ids 0..255 are the 256 bytes, written with GPT-2's printable stand-in
# characters; the next ids are merges learned from CORPUS below by plain BPE
# (most frequent adjacent pair first, ties broken by the pair's text); the
# last two ids are the control tokens <|bos|> and <|eos|>.

import re
from collections import Counter

CORPUS = """
Kiln is a small inference server for language models. It reads a model file,
keeps the weights in memory, and answers requests over HTTP. Each request is a
prompt that the tokenizer turns into numbers; the model reads the numbers and
predicts the next one, again and again, until it reaches the end of the answer
or the limit that the request sets. The server batches requests that arrive at
the same time, so that the matrix products that dominate the work are shared.
A cache keeps the keys and values of earlier tokens, which makes each new token
cheap. The tests compare the logits of every position with a reference that was
computed in double precision, and they check the tokenizer against known ids.
When a number differs, the test says which position, which token and how much.
The weights of these tiny models are random, so their answers mean nothing; what
matters is that two independent programs agree on every number they produce.
Rotary position embeddings turn each pair of query and key values by an angle
that grows with the position; the frequency of the turn depends on the pair.
Attention then compares every query with the keys of the tokens before it, and
the softmax of those scores weights the values. The feed forward block follows,
with a gate, an up projection and a down projection. Normalization comes first
in every block, and the result is added back to the stream of hidden states.
"""

# Roughly GPT-2's pre-split: words with an optional leading space, numbers,
# runs of punctuation, runs of white space.
_SPLIT = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+")

TOKEN_NORMAL = 1
TOKEN_CONTROL = 3


def byte_chars():
    """GPT-2's table: byte value -> printable character standing for it.
    Printable Latin-1 bytes stand for themselves; the others (controls, space,
    a few more) are mapped in byte order to code points 256, 257, ..."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build(n_vocab):
    """Returns (tokens, token_types, merges, bos_id, eos_id) for n_vocab ids."""
    bc = byte_chars()
    tokens = [bc[b] for b in range(256)]
    n_merges = n_vocab - 256 - 2
    words = Counter(tuple(bc[b] for b in w.encode("utf-8")) for w in _SPLIT.findall(CORPUS))
    known = set(tokens)
    merges = []
    banned = set()
    while len(merges) < n_merges:
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                if (a, b) not in banned:
                    pairs[(a, b)] += c
        if not pairs:
            raise RuntimeError(f"corpus too small: only {len(merges)} merges for {n_merges}")
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if a + b in known:  # same text reachable by another merge order: skip the pair
            banned.add((a, b))
            continue
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        known.add(a + b)
        merged = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    tokens += ["<|bos|>", "<|eos|>"]
    types = [TOKEN_NORMAL] * (n_vocab - 2) + [TOKEN_CONTROL] * 2
    return tokens, types, merges, n_vocab - 2, n_vocab - 1


if __name__ == "__main__":
    toks, _, merges, _, _ = build(512)
    print(len(toks), len(merges), toks[256:276], toks[-4:])
