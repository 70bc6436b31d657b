#!/usr/bin/python3
# The committed check that no held-out arithmetic problem was trained on:
# replays the training run's chat stream (same data.py, chapters, seed and
# count as the run recorded in run-log.json) and checks that none of its
# problems is in the held-out partition, and that every problem the quality
# tests ask (tests/data/demo-model/arith-heldout.jsonl) is in it.
# Needs the KJV text only for the word/text chats that share the random stream:
# without `bible` (bible-kjv) it reports a skip (exit 77).
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, HERE)
import data  # noqa: E402


def main():
    log = json.load(open(os.path.join(HERE, "run-log.json")))
    problems = [json.loads(l) for l in open(os.path.join(ROOT, "tests", "data", "demo-model",
                                                         "arith-heldout.jsonl"))]
    bad = [p for p in problems if not data.is_heldout_pair(p["a"], p["b"])]
    assert not bad, f"test problems outside the held-out partition: {bad[:3]}"
    assert all(p["question"] == data.TEST_QUESTION.format(**p) for p in problems)

    if shutil.which("bible") is None:
        print("SKIP: `bible` (Debian bible-kjv) not installed; cannot replay the training data")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        kjv = os.path.join(tmp, "kjv.txt")
        subprocess.run([os.path.join(HERE, "extract_kjv.sh"), kjv], check=True,
                       stdout=subprocess.DEVNULL)
        chapters = data.parse_kjv(open(kjv, encoding="utf-8").read())
    train, _ = data.split_chapters(chapters)
    trained = data.training_arithmetic_problems(train, log["n_chats"], log["seed"])
    leaked = [t for t in trained if data.is_heldout_pair(t[0], t[2])]
    asked = {(p["a"], p["op"], p["b"]) for p in problems}
    overlap = asked.intersection(trained)
    print(f"{len(trained)} trained arithmetic problems replayed (seed {log['seed']}); "
          f"{len(leaked)} in the held-out partition, {len(overlap)} of the "
          f"{len(problems)} test problems among them")
    return 1 if leaked or overlap else 0


if __name__ == "__main__":
    sys.exit(main())
