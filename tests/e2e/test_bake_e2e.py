"""End-to-end test of `kiln bake` -> `kiln serve --model DIR` with the real
binary on a tiny model: two bakes with different warm prompts give a
byte-identical weights.bin; the served artifact restores its baked prefix
cache before /health/ready turns 200 (a first request with the warm preamble
is a prefix-cache hit) and answers exactly as serving the GGUF does; the
start-up phases are in /metrics; contradicting flags and damaged files are
refused. Run: python3 tests/e2e/test_bake_e2e.py (env as kiln_server.py)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server  # noqa: E402
from kiln_server import KILN, MODEL, CHAT_TEMPLATE, Server  # noqa: E402

PREAMBLE = ("You are a careful assistant. Answer in short sentences, cite nothing, and keep "
            "every reply under fifty words. " * 4).strip()


def bake(out, warm_lines, *extra):
    warm = out + ".jsonl"
    with open(warm, "w") as f:
        for line in warm_lines:
            f.write(json.dumps(line) + "\n")
    args = [KILN, "bake", "--model", MODEL, "--out", out, "--warm", warm, "--ctx-size", "512",
            "--target-arch", "cpu", "--chat-template", CHAT_TEMPLATE, "--threads", "2", *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stderr


def warm_json(art):
    """The JSON document of DIR/warm.bin (layout: src/kiln/artifact/warm_file.h)."""
    with open(os.path.join(art, "warm.bin"), "rb") as f:
        head = f.read(32)
        assert head[:8] == b"KILNWARM"
        n = int.from_bytes(head[16:24], "little")
        return json.loads(f.read(n))


def serve_fails(model_dir, *extra):
    args = [KILN, "serve", "-m", model_dir, "--host", "127.0.0.1", "--port", "0",
            "--threads", "2", *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stderr


class Bake(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-bake-e2e-")
        cls.a = os.path.join(cls.tmp, "a")
        cls.b = os.path.join(cls.tmp, "b")
        cls.log_a = bake(cls.a, [
            {"prompt": PREAMBLE},
            {"messages": [{"role": "system", "content": PREAMBLE},
                          {"role": "user", "content": "hello"}], "max_tokens": 4},
        ], "--record-outputs")
        bake(cls.b, [{"prompt": "something else entirely, " * 20}])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_weights_reproducible_across_warm_prompts(self):
        with open(os.path.join(self.a, "weights.bin"), "rb") as f:
            wa = f.read()
        with open(os.path.join(self.b, "weights.bin"), "rb") as f:
            wb = f.read()
        self.assertEqual(wa, wb)
        with open(os.path.join(self.a, "warm.bin"), "rb") as f, \
                open(os.path.join(self.b, "warm.bin"), "rb") as g:
            self.assertNotEqual(f.read(), g.read())
        self.assertEqual(sorted(os.listdir(self.a)), ["warm.bin", "weights.bin"])
        self.assertIn("2 recorded outputs", self.log_a)

    def test_serve_restores_prefixes_before_ready_and_matches_gguf(self):
        req = {"prompt": PREAMBLE + " What is a river?", "max_tokens": 8, "temperature": 0}
        kiln_server.MODEL = self.a
        try:
            with Server() as s:
                # Ready implies restored: cached blocks before any request.
                self.assertGreater(s.metric("kiln_kv_blocks_cached"), 0)
                _, body = s.get("/metrics")
                text = body.decode()
                for phase in ("backend_ready", "weights_read", "weights_uploaded",
                              "prefixes_restored", "warmup", "total"):
                    self.assertIn(f'kiln_startup_phase_seconds{{phase="{phase}"}}', text)
                self.assertIn("start-up: process start ->", s.output())
                # The recorded output of a warm prompt is what the server answers.
                rec = [o for o in warm_json(self.a)["outputs"]
                       if o["request"].get("prompt") == PREAMBLE][0]
                st, again = s.post("/v1/completions", {"prompt": PREAMBLE, "temperature": 0,
                                                       "max_tokens": rec["sampling"]["max_tokens"]})
                self.assertEqual(st, 200, again)
                self.assertEqual(again["choices"][0]["text"], rec["text"])
                self.assertEqual(again["choices"][0]["finish_reason"], rec["finish_reason"])
                st, baked = s.post("/v1/completions", req)
                self.assertEqual(st, 200, baked)
                self.assertGreater(baked["usage"]["prompt_tokens_details"]["cached_tokens"], 16)
                # The warm prompts' texts were learned: a prompt that starts
                # with one reuses their tokens (and must count the same).
                self.assertRegex(s.output(), r"[1-9]\d* baked prompt texts tokenized ahead")
                s.terminate()
        finally:
            kiln_server.MODEL = MODEL
        with Server() as s:
            st, plain = s.post("/v1/completions", req)
            self.assertEqual(st, 200)
            self.assertEqual(plain["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
            s.terminate()
        self.assertEqual(baked["choices"][0]["text"], plain["choices"][0]["text"])
        self.assertEqual(baked["usage"]["prompt_tokens"], plain["usage"]["prompt_tokens"])

    def test_recorded_outputs_seed_the_exact_cache(self):
        rec = [o for o in warm_json(self.a)["outputs"]
               if o["request"].get("prompt") == PREAMBLE][0]
        req = {"prompt": PREAMBLE, "temperature": 0, "max_tokens": rec["sampling"]["max_tokens"]}
        kiln_server.MODEL = self.a
        try:
            with Server(cache=True) as s:
                self.assertIn("exact cache seeded with 2 of 2 recorded outputs", s.output())
                st, body, headers = s.request("POST", "/v1/completions", req)
                self.assertEqual(st, 200, body)
                self.assertEqual(headers.getheader("x-kiln-cache"), "exact")
                self.assertEqual(json.loads(body)["choices"][0]["text"], rec["text"])
                s.terminate()
        finally:
            kiln_server.MODEL = MODEL

    def test_contradicting_flags_are_refused(self):
        rc, err = serve_fails(self.a, "--kv-type", "fp8", "--ctx-size", "512")
        self.assertNotEqual(rc, 0)
        self.assertIn("kv_type differs", err)
        self.assertIn("kiln bake --model", err)
        rc, err = serve_fails(self.a, "--ctx-size", "1024")
        self.assertNotEqual(rc, 0)
        self.assertIn("ctx_size differs", err)

    def test_damaged_artifacts_are_refused(self):
        for name, damage in (("weights.bin", "flip"), ("weights.bin", "cut"),
                             ("warm.bin", "flip"), ("warm.bin", "cut")):
            d = os.path.join(self.tmp, f"bad-{name}-{damage}")
            shutil.copytree(self.a, d)
            p = os.path.join(d, name)
            size = os.path.getsize(p)
            with open(p, "r+b") as f:
                if damage == "flip":
                    f.seek(size // 2)
                    byte = f.read(1)
                    f.seek(size // 2)
                    f.write(bytes([byte[0] ^ 0x40]))
                else:
                    f.truncate(size - 1000)
            rc, err = serve_fails(d, "--ctx-size", "512")
            self.assertNotEqual(rc, 0, (name, damage))
            self.assertIn("never served", err, (name, damage, err))
            r = subprocess.run([KILN, "generate", "-m", d, "-p", "hi", "-n", "1"],
                               capture_output=True, text=True, timeout=60)
            self.assertNotEqual(r.returncode, 0)

    def test_generate_reads_an_artifact(self):
        r = subprocess.run([KILN, "generate", "-m", self.a, "-p", "hello", "-n", "3",
                            "--temp", "0", "-t", "2"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("verified", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
