# Training and held-out data of kiln's demo model: King James Bible chapters
# and generated chat conversations (arithmetic, word tasks, questions on the
# text), all from one seed. Pure Python (no numpy/torch) so that it runs on a
# bare machine too: check_heldout.py and the tests reuse it.
#
# Input: the text that extract_kjv.sh writes with Debian's `bible` program:
#   "Genesis 1" (a chapter heading at column 0), then "  1 In the beginning ..."
#   (verse number and text, indented), blank lines in between.
#
# Held-out partitions (never in the training data):
#   text:       chapters whose running index i (0-based over the whole Bible)
#               has i % HELDOUT_EVERY == HELDOUT_AT;
#   arithmetic: every problem a OP b with (a + b) % 7 == 0, for + and - and all
#               phrasings, so the model is scored on pairs it never saw.

import random
import re

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [EOT, IM_START, IM_END]

HELDOUT_EVERY, HELDOUT_AT = 40, 20
HELDOUT_MOD = 7

# The phrasing the quality tests ask with (also trained, on other numbers).
TEST_QUESTION = "What is {a} {op} {b}?"


def render_chat(messages, add_generation_prompt=False):
    """Python twin of CHAT_TEMPLATE (the tests compare both through kiln)."""
    out = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return out + (f"{IM_START}assistant\n" if add_generation_prompt else "")


# --------------------------------------------------------------------------
# The Bible text

_HEADING = re.compile(r"^(\S.*\S) (\d+)$")
_VERSE = re.compile(r"^\s+(\d+) (.*)$")


def parse_kjv(text):
    """[(book, chapter, [(verse, text), ...]), ...] in canonical order."""
    chapters = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _HEADING.match(line)
        if m:
            chapters.append((m.group(1), int(m.group(2)), []))
            continue
        m = _VERSE.match(line)
        if not m or not chapters:
            raise ValueError(f"unexpected line in the KJV text: {line[:60]!r}")
        chapters[-1][2].append((int(m.group(1)), m.group(2).strip()))
    if len(chapters) != 1189:
        raise ValueError(f"expected the 1189 chapters of the KJV, found {len(chapters)}")
    return chapters


def chapter_text(ch):
    book, c, verses = ch
    return f"{book} {c}\n" + "".join(f"{v} {t}\n" for v, t in verses)


def split_chapters(chapters):
    train, held = [], []
    for i, ch in enumerate(chapters):
        (held if i % HELDOUT_EVERY == HELDOUT_AT else train).append(ch)
    return train, held


def heldout_text(chapters):
    return "\n".join(chapter_text(ch) for ch in split_chapters(chapters)[1])


# --------------------------------------------------------------------------
# Arithmetic

def is_heldout_pair(a, b):
    return (a + b) % HELDOUT_MOD == 0


def _operand(rng):
    # Mostly 4-digit, as the tests are (uniform over 100..9999), with some
    # shorter operands so that small sums work too.
    r = rng.random()
    if r < 0.05:
        return rng.randint(0, 99)
    if r < 0.30:
        return rng.randint(100, 999)
    return rng.randint(1000, 9999)


_ARITH_FORMS = [
    # (question, weight); {a} {b} {op} {word}
    (TEST_QUESTION, 5),
    ("What is {a} {word} {b}?", 2),
    ("{a} {op} {b} =", 2),
    ("Calculate {a} {op} {b}.", 1),
    ("Compute {a} {op} {b}", 1),
    ("What does {a} {op} {b} equal?", 1),
    ("Please work out {a} {op} {b}.", 1),
]


def arithmetic_chat(rng):
    """One training conversation; never a held-out pair."""
    while True:
        a, b = _operand(rng), _operand(rng)
        if not is_heldout_pair(a, b):
            break
    op = rng.choice("+-")
    r = a + b if op == "+" else a - b
    forms, weights = zip(*_ARITH_FORMS)
    q = rng.choices(forms, weights)[0].format(a=a, b=b, op=op, word="plus" if op == "+" else "minus")
    return (a, op, b), q, f"{a} {op} {b} = {r}"


def heldout_arithmetic(n, seed):
    """n held-out problems of 3- and 4-digit operands, half additions, half
    subtractions: [{"a", "op", "b", "answer", "question"}]."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        a = rng.randint(100, 9999)
        b = rng.randint(100, 9999)
        op = "+" if len(out) % 2 == 0 else "-"
        if not is_heldout_pair(a, b) or (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        out.append({"a": a, "op": op, "b": b, "answer": a + b if op == "+" else a - b,
                    "question": TEST_QUESTION.format(a=a, op=op, b=b)})
    return out


# --------------------------------------------------------------------------
# Word tasks and questions on the text

def vocabulary(chapters, n=1500):
    counts = {}
    for _, _, verses in chapters:
        for _, t in verses:
            for w in re.findall(r"\b[a-z]{2,9}\b", t):
                counts[w] = counts.get(w, 0) + 1
    return sorted(counts, key=lambda w: (-counts[w], w))[:n]


def word_chat(rng, words):
    ws = [rng.choice(words) for _ in range(rng.randint(2, 8))]
    line = " ".join(ws)
    kind = rng.randrange(5)
    if kind == 0:
        return f"Count the words: {line}", f"There are {len(ws)} words."
    if kind == 1:
        return f"Repeat after me: {line}", line
    if kind == 2:
        return f"Reverse the words: {line}", " ".join(reversed(ws))
    if kind == 3:
        w = ws[0]
        return f"How many letters are in the word {w}?", f"The word {w} has {len(w)} letters."
    w = ws[0]
    return f"Spell the word {w}.", "-".join(w)


def text_chat(rng, chapters):
    book, c, verses = rng.choice(chapters)
    v, t = rng.choice(verses)
    kind = rng.randrange(4)
    if kind == 0:
        return f"Quote {book} {c}:{v}.", t
    if kind == 1:
        words = t.split()
        if len(words) >= 6:
            k = len(words) // 2
            return f"Finish the verse: {' '.join(words[:k])}", " ".join(words[k:])
        return f"Quote {book} {c}:{v}.", t
    if kind == 2:
        return f"How many verses are in {book} chapter {c}?", f"{book} {c} has {len(verses)} verses."
    return f"Which book is {book} {c}:{v} in?", f"{book} {c}:{v} is in the book of {book}."


# --------------------------------------------------------------------------
# The training mix

def _chat_stream(chapters_train, n, seed):
    """n conversations as (arithmetic problem or None, question, answer).
    Fractions: 88% arithmetic, 8% word tasks, 4% questions on the text."""
    rng = random.Random(seed)
    words = vocabulary(chapters_train)
    for _ in range(n):
        r = rng.random()
        if r < 0.88:
            yield arithmetic_chat(rng)
        elif r < 0.96:
            yield (None, *word_chat(rng, words))
        else:
            yield (None, *text_chat(rng, chapters_train))


def chat_examples(chapters_train, n, seed):
    """n (prompt, answer) pairs: the prompt is the rendered template up to the
    assistant's turn, the answer its content plus <|im_end|>\\n. Only the answer
    is trained on (the user's numbers are random, nothing to learn there)."""
    out = []
    for _, q, a in _chat_stream(chapters_train, n, seed):
        prompt = render_chat([{"role": "user", "content": q}], add_generation_prompt=True)
        out.append((prompt, a + IM_END + "\n"))
    return out


def training_arithmetic_problems(chapters_train, n, seed):
    """The (a, op, b) of every arithmetic problem chat_examples(n, seed) trains on."""
    return [p for p, _, _ in _chat_stream(chapters_train, n, seed) if p is not None]
