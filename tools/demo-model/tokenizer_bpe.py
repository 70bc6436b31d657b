# The demo model's tokenizer: byte-level BPE trained with Hugging Face
# `tokenizers`, pre-tokenized exactly as Qwen2's tokenizer.json does (a Split
# on Qwen2's regex, one piece per digit, then ByteLevel without its own regex),
# so that the GGUF can name the `qwen2` pre-tokenizer and kiln reproduces it.

import json
import random

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

import data

# Qwen2's Split pattern (its tokenizer.json); kiln's `qwen2` pre-tokenizer
# (src/kiln/tokenizer/bpe.cpp) is the same expression.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GGUF_PRE = "qwen2"


def train(chapters_train, n_vocab, seed):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n_vocab, min_frequency=2, show_progress=False,
                                  special_tokens=data.SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # The text plus a sample of the chats, so the template's words get tokens.
    chats = [p + a for p, a in data.chat_examples(chapters_train, 20000, seed + 1)]
    texts = [data.chapter_text(ch) for ch in chapters_train] + chats
    tok.train_from_iterator(texts, trainer)
    return tok


def vocab_and_merges(tok):
    """(tokens by id, merges as "a b" strings, ids of the special tokens)."""
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens), "token ids are not contiguous"
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in merges]
    specials = [vocab[s] for s in data.SPECIAL_TOKENS]
    return tokens, merges, specials


CASES = [
    "In the beginning God created the heaven and the earth.",
    "What is 1234 + 5678?",
    "12345678901234567890 -42 3.14159 1,000,000",
    data.render_chat([{"role": "user", "content": "What is 700 - 1234?"}], True),
    "  leading spaces\n\n\ttabs and\r\nnewlines   trailing   ",
    "Ünïcödé: café, naïve, 東京, Ελληνικά, 🙂🙂",
    "don't WON'T it's I'M we'll they've she'd",
    "<|endoftext|> specials <|im_start|> inside <|im_end|>",
    "a-b-c (parentheses) [brackets] {braces} \"quotes\" 'single'",
    "And he said unto them, Go ye into all the world, and preach the gospel to every creature.",
]


def write_cases(tok, path):
    """Hugging Face's ids for CASES (special tokens parsed), which kiln must
    reproduce from the GGUF alone (tests/demo_model)."""
    rng = random.Random(5)
    cases = list(CASES)
    for _ in range(10):  # random digit/space/punctuation soup
        cases.append("".join(rng.choice("0123456789 +-=?.,\n abcXYZ") for _ in range(60)))
    out = [{"text": c, "ids": tok.encode(c).ids} for c in cases]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
