"""End-to-end test of `kiln loadtest` against a real `kiln serve` (tiny model,
CPU): a sweep produces the table, results.json/csv, requests.csv and the SVG
chart, and a recommendation that respects the SLO (the top level overflows
--max-concurrency, so it fails on 429s); then `run --rate` (open loop) and
`replay` of the server's own --request-log. About 30 s.
Run: python3 tests/e2e/test_loadtest_e2e.py (KILN_BINARY, KILN_E2E_MODEL and
KILN_SHARED_DIR override the defaults)."""
import csv
import json
import os
import subprocess
import sys
import tempfile
import unittest
import xml.dom.minidom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_server import KILN, Server  # noqa: E402

SLO_TTFT_MS = 3000
SLO_TPOT_MS = 500


def load_json(path):
    with open(path) as f:
        return json.load(f)


def loadtest(*args, timeout=120):
    p = subprocess.run([KILN, "loadtest", *args], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


class Loadtest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-loadtest-e2e-")
        cls.log = os.path.join(cls.tmp, "requests.log")
        cls.s = Server("--request-log", cls.log, parallel=4, max_concurrency=8)
        cls.url = f"http://127.0.0.1:{cls.s.port}"

    @classmethod
    def tearDownClass(cls):
        cls.s.terminate()
        cls.s.__exit__()

    def test_1_sweep(self):
        out = os.path.join(self.tmp, "sweep")
        json_out = os.path.join(self.tmp, "sweep.json")
        rc, stdout, stderr = loadtest(
            "sweep", "--url", self.url, "--concurrency", "1,2,4,16", "--duration", "3",
            "--output-len", "12", "--prompt-len", "24", "--warmup", "1", "--out", out,
            "--json-out", json_out, "--slo-ttft-p99", str(SLO_TTFT_MS), "--slo-tpot-p99",
            str(SLO_TPOT_MS), "--price-per-hour", "0.71", "--keep-going", "--service", "tiny")
        print(stdout, stderr, sep="\n")
        self.assertEqual(rc, 0, stderr)
        # The table: one row per level, then the recommendation and the deploy line.
        for label in ("c=1", "c=2", "c=4", "c=16"):
            self.assertIn(label, stdout)
        self.assertIn("recommendation: --concurrency", stdout)
        self.assertIn("gcloud run deploy tiny --image IMAGE --concurrency", stdout)
        self.assertIn("kiln's rule of thumb (target /metrics)", stdout)
        for f in ("results.json", "results.csv", "requests.csv", "chart.svg"):
            self.assertTrue(os.path.getsize(os.path.join(out, f)) > 0, f)
        j = load_json(json_out)
        self.assertEqual(j, load_json(os.path.join(out, "results.json")))
        rec, levels = j["recommendation"], j["levels"]
        self.assertEqual([lv["concurrency"] for lv in levels], [1, 2, 4, 16])
        self.assertEqual(rec["slo_ttft_p99_ms"], SLO_TTFT_MS)
        self.assertEqual(rec["slo_tpot_p99_ms"], SLO_TPOT_MS)
        # 16 clients against --max-concurrency 8: refusals, counted as 429s.
        top = levels[-1]
        self.assertGreater(top["errors_429"], 0, top)
        self.assertFalse(top["meets_slo"])
        for lv in levels[:3]:
            self.assertEqual(lv["errors"], 0, lv)
            self.assertGreater(lv["output_tok_s"], 0, lv)
            self.assertEqual(lv["short_outputs"], 0, "ignore_eos: every request makes 12 tokens")
            # Fresh prompts every level: a prefix-cache share near 0 (only a
            # shared first block of similar word soup could hit).
            self.assertIsNotNone(lv["cached_share"])
            self.assertLess(lv["cached_share"], 0.5, lv)
        # The recommendation respects the SLO: it and every level below meet it.
        self.assertTrue(rec["meets_slo"])
        c = rec["concurrency"]
        self.assertIn(c, (1, 2, 4))
        for lv in levels:
            if lv["concurrency"] <= c:
                self.assertLessEqual(lv["ttft_p99_ms"], SLO_TTFT_MS)
                self.assertLessEqual(lv["tpot_p99_ms"], SLO_TPOT_MS)
                self.assertTrue(lv["meets_slo"])
        chosen = next(lv for lv in levels if lv["concurrency"] == c)
        self.assertAlmostEqual(rec["throughput_tok_s"], chosen["output_tok_s"])
        self.assertAlmostEqual(rec["tokens_per_gpu_hour"], chosen["output_tok_s"] * 3600)
        self.assertAlmostEqual(rec["cost_per_million_tokens_usd"],
                               0.71 / (chosen["output_tok_s"] * 3600 / 1e6))
        self.assertIn(f"--concurrency {c} ", rec["gcloud"])
        self.assertIsNotNone(j["kiln_rule_of_thumb"])
        self.assertGreater(j["kiln_rule_of_thumb"]["recommended_concurrency"], 0)
        # CSV and chart parse.
        with open(os.path.join(out, "results.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([r["concurrency"] for r in rows], ["1", "2", "4", "16"])
        svg = xml.dom.minidom.parse(os.path.join(out, "chart.svg"))
        self.assertEqual(svg.documentElement.tagName, "svg")
        self.assertGreaterEqual(len(svg.getElementsByTagName("circle")), 8)
        # The server's own counters agree that the load reached it.
        self.assertGreater(self.s.metric("kiln_requests_rejected_total"), 0)

    def test_2_open_loop_and_replay(self):
        rc, stdout, stderr = loadtest(
            "run", "--url", self.url, "--rate", "6", "--duration", "2", "--output-len", "8",
            "--prompt-len", "16", "--shared-preamble", "2,3", "--preamble-len", "40",
            "--api", "chat", "-q", "--json-out", os.path.join(self.tmp, "run.json"))
        print(stdout, stderr, sep="\n")
        self.assertEqual(rc, 0, stderr)
        lv = load_json(os.path.join(self.tmp, "run.json"))["levels"][0]
        self.assertGreater(lv["ok"], 0)
        self.assertEqual(lv["errors"], 0, lv)
        self.assertGreater(lv["cached_share"], 0, "shared preambles hit kiln's prefix cache")

        rc, stdout, stderr = loadtest(
            "replay", self.log, "--url", self.url, "--speed", "20", "--requests", "30", "-q",
            "--json-out", os.path.join(self.tmp, "replay.json"))
        print(stdout, stderr, sep="\n")
        self.assertEqual(rc, 0, stderr)
        lv = load_json(os.path.join(self.tmp, "replay.json"))["levels"][0]
        self.assertEqual(lv["requests"], 30)
        self.assertGreater(lv["ok"], 0)
        self.assertEqual(lv["ok"] + lv["errors"], 30)
        self.assertGreater(lv["req_s"], 0)

    def test_3_bad_target(self):
        rc, _, stderr = loadtest("run", "--url", "https://example.run.app", "-c", "1")
        self.assertEqual(rc, 1)
        self.assertIn("gcloud run services proxy", stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
