"""Shared helpers of the deploy tests: paths, a Dockerfile reader, the
guide's tested command blocks, and running kiln."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
GUIDE = os.path.join(ROOT, "docs", "cloud-run.md")


def kiln_binary():
    b = os.environ.get("KILN_BINARY") or os.path.join(ROOT, "build", "kiln")
    if not os.access(b, os.X_OK):
        sys.exit(f"no kiln binary at {b} (set KILN_BINARY)")
    return b


def shared_dir():
    return os.environ.get("KILN_SHARED_DIR") or os.path.join(ROOT, "..", "shared")


def test_model():
    return os.path.join(shared_dir(), "testdata", "reference", "llama3-f16.gguf")


def chat_model():
    """A tiny model with a chat template, as deploy/warm.jsonl's chat prompts need."""
    return os.path.join(shared_dir(), "testdata", "reference", "qwen2-f16.gguf")


# ---- Dockerfile -------------------------------------------------------------------
class Stage:
    def __init__(self, base, name):
        self.base, self.name = base, name
        self.instructions = []  # (KEYWORD, text)

    def all(self, keyword):
        return [t for k, t in self.instructions if k == keyword]


def read_dockerfile(path=os.path.join(DEPLOY, "Dockerfile")):
    """Returns (global ARG defaults, [Stage]) with continuation lines joined."""
    lines, buf = [], ""
    for raw in read(path).splitlines():
        s = raw
        if not buf and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if buf and s.lstrip().startswith("#"):
            continue  # comment lines inside a continued instruction
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    global_args, stages = {}, []
    for line in lines:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            stages.append(Stage(m.group(1), m.group(2)))
        elif not stages:
            if keyword == "ARG":
                name, _, value = rest.partition("=")
                global_args[name] = _unquote(value)
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def _unquote(v):
    v = v.strip()
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" else v


def stage(stages, name):
    for s in stages:
        if s.name == name:
            return s
    raise AssertionError(f"Dockerfile has no stage '{name}'")


def stage_env(stages, name):
    """ARG defaults and ENV values a RUN of stage `name` sees (ENV inherited
    from the stages it is built FROM; ARG scoped to the stage)."""
    chain, s = [], stage(stages, name)
    while True:
        chain.append(s)
        parents = [p for p in stages if p.name == s.base]
        if not parents:
            break
        s = parents[0]
    env = {}
    for st in reversed(chain):
        for keyword, rest in st.instructions:
            if keyword == "ENV":
                for tok in shlex.split(rest):
                    k, _, v = tok.partition("=")
                    env[k] = v
            elif keyword == "ARG" and st is chain[0]:
                k, _, v = rest.partition("=")
                env[k] = _unquote(v)
    return env


def exec_form(text):
    """JSON exec form of ENTRYPOINT/CMD."""
    return json.loads(text)


# ---- docs/cloud-run.md ----------------------------------------------------------------
def guide_blocks():
    """{name: [command, ...]} of the fenced blocks marked <!-- tested: name -->;
    continuation lines are joined and comment lines dropped."""
    text = read(GUIDE)
    blocks = {}
    for m in re.finditer(r"<!--\s*tested:\s*([\w-]+)\s*-->\s*\n```\w*\n(.*?)```", text, re.S):
        cmds, buf = [], ""
        for line in m.group(2).splitlines():
            if line.strip().startswith("#") or not line.strip():
                continue
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            cmds.append(" ".join((buf + line).split()))
            buf = ""
        blocks[m.group(1)] = cmds
    return blocks


# ---- kiln ---------------------------------------------------------------------------
def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(port, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


def post_json(port, path, body, timeout=120):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def yaml_body(text):
    """The YAML without comment lines (the header records machine-local paths)."""
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)
