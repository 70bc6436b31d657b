#!/usr/bin/python3
"""Guards the demo model's arithmetic results against a shortcut: no code
outside tools/demo-model/ recognizes an arithmetic question or computes its
answer (the server, the CLI and the tests only move tokens and compare
strings). A grep over the source tree, with planted examples first so that
the patterns are known to fire.

Looked for: in C++ string literals, the question phrasings of the training
data and regexes that match "digits, + or -, digits"; in Python and shell, a
sum or difference of operands parsed from a problem (int(...) + int(...),
p["a"] + p["b"]) or eval()."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCAN = ["src", "tests", "scripts", "bench", "tools", "deploy"]
# C++ is checked in the server and CLI (what answers requests); the C++ unit
# tests may well hold arithmetic prompts as data (the semantic cache's).
CPP_SCAN = ("src",)
SKIP_DIRS = {os.path.join("tools", "demo-model"), os.path.join("tests", "data"), "node_modules",
             "__pycache__"}
THIS = os.path.relpath(os.path.abspath(__file__), ROOT)

CPP_LITERAL = re.compile(r'"(?:[^"\\\n]|\\.)*"')
CPP_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
CPP_BAD = [
    # a question of the training data's shape: "What is {a} + {b}", "... plus ..."
    re.compile(r"\b(what is|what does|compute|calculate|work out)\b.*(\d|\{|%)\S*\s*([-+]|plus|minus)", re.I),
    # a regex over digits with + or - between them: \d+ \+ \d+, [0-9]+\s*[-+]...
    re.compile(r"(\\d|\[0-9\])[+*]?\)?(\\s\*|\s|\\s)*(\\\\?[+-]|\[[+-]+\]|\[-\+\]|\[\+-\])"),
]
SCRIPT_BAD = [
    re.compile(r"\bint\([^\n]{0,40}?\)\s*[-+]\s*int\("),
    re.compile(r"""\[\s*["'](a|b)["']\s*\]\s*[-+]\s*\w+\[\s*["'](a|b)["']\s*\]"""),
    re.compile(r"(?<![.\w])eval\("),
]

PLANTED_CPP = 'auto re = std::regex("(\\\\d+) \\\\+ (\\\\d+)"); std::string q = "What is";'
PLANTED_PY = 'ans = int(m.group(1)) + int(m.group(2)); r = p["a"] - p["b"]'


def cpp_hits(text):
    hits = []
    for lit in CPP_LITERAL.findall(CPP_COMMENT.sub("", text)):
        for pat in CPP_BAD:
            if pat.search(lit):
                hits.append(lit[:80])
    return hits


def script_hits(text):
    return [m.group(0) for pat in SCRIPT_BAD for m in pat.finditer(text)]


def main():
    assert cpp_hits(PLANTED_CPP), "the C++ patterns no longer fire on a planted example"
    assert len(script_hits(PLANTED_PY)) == 2, "the script patterns no longer fire on planted examples"
    found = []
    n_files = 0
    for top in SCAN:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            rel_dir = os.path.relpath(dirpath, ROOT)
            dirnames[:] = [d for d in dirnames
                           if d not in SKIP_DIRS and os.path.join(rel_dir, d) not in SKIP_DIRS]
            for name in filenames:
                rel = os.path.join(rel_dir, name)
                if rel == THIS:
                    continue
                ext = os.path.splitext(name)[1]
                if ext in (".cpp", ".h", ".cu", ".cuh", ".hpp", ".cc"):
                    if top not in CPP_SCAN:
                        continue
                    check = cpp_hits
                elif ext in (".py", ".sh", ".mjs", ".js") or (ext == "" and top == "scripts"):
                    check = script_hits
                else:
                    continue
                try:
                    text = open(os.path.join(ROOT, rel), encoding="utf-8", errors="replace").read()
                except OSError:
                    continue
                n_files += 1
                found += [f"{rel}: {h}" for h in check(text)]
    for f in found:
        print("FAIL arithmetic-looking code outside tools/demo-model:", f)
    print(f"{n_files} files scanned, {len(found)} arithmetic-looking pieces outside tools/demo-model")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
