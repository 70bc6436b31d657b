#!/usr/bin/python3
# Writes the demo model's committed test data from the KJV text and the seeds
# in data.py (pure Python): tests/data/demo-model/heldout-kjv.txt (the held-out
# chapters, what reference.py scored) and arith-heldout.jsonl (500 held-out
# problems with their answers, so that no test outside tools/demo-model
# computes arithmetic).
#   /usr/bin/python3 tools/demo-model/make_test_data.py [--kjv out/demo-model/kjv.txt]
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402

OUT = os.path.join(HERE, "..", "..", "tests", "data", "demo-model")
N_PROBLEMS, SEED = 500, 7


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kjv", default="out/demo-model/kjv.txt")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    chapters = data.parse_kjv(open(args.kjv, encoding="utf-8").read())
    with open(os.path.join(OUT, "heldout-kjv.txt"), "w", encoding="utf-8") as f:
        f.write(data.heldout_text(chapters))
    with open(os.path.join(OUT, "arith-heldout.jsonl"), "w") as f:
        for p in data.heldout_arithmetic(N_PROBLEMS, SEED):
            f.write(json.dumps(p) + "\n")


if __name__ == "__main__":
    main()
