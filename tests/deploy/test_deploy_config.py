#!/usr/bin/env python3
"""deploy/ checked without a Docker engine or gcloud: service and build YAML
against the keys the Cloud Run and Cloud Build references allow (with
misspelled-key negatives), probes and port against kiln's routes, the
service's containerConcurrency against `kiln plan`, `kiln plan` against what
`kiln serve --device cpu --kv-memory` reports, and the guide's commands."""

import copy
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(__file__))
import recipe  # noqa: E402
import schemas  # noqa: E402

SERVICES = ["service.yaml", "service-gcs.yaml"]
BUILDS = ["cloudbuild.yaml", "cloudbuild-gpu-bake.yaml"]


def load(name):
    text = recipe.read(os.path.join(recipe.DEPLOY, name))
    return yaml.safe_load(text), text


def container(doc):
    return doc["spec"]["template"]["spec"]["containers"][0]


def arg_value(args, flag):
    return args[args.index(flag) + 1]


class ServiceYaml(unittest.TestCase):
    def test_keys_and_rules(self):
        for name in SERVICES:
            doc, _ = load(name)
            self.assertEqual(schemas.check(doc, schemas.CLOUD_RUN_SERVICE), [], name)
            self.assertEqual(schemas.check_cloud_run_rules(doc), [], name)

    def test_misspelled_keys_fail(self):
        doc, _ = load("service.yaml")
        cases = [
            (("spec", "template", "spec"), "containerConcurrency", "containerConcurency"),
            (("spec", "template", "spec"), "nodeSelector", "nodeselector"),
            (("spec", "template", "metadata", "annotations"), "autoscaling.knative.dev/maxScale",
             "autoscaling.knative.dev/maxscale"),
        ]
        for path, good, bad in cases:
            d = copy.deepcopy(doc)
            node = d
            for p in path:
                node = node[p]
            node[bad] = node.pop(good)
            errs = schemas.check(d, schemas.CLOUD_RUN_SERVICE)
            self.assertTrue(any(bad in e for e in errs), f"{bad} was not caught: {errs}")
        d = copy.deepcopy(doc)
        c = container(d)
        c["startUpProbe"] = c.pop("startupProbe")
        self.assertTrue(schemas.check(d, schemas.CLOUD_RUN_SERVICE))
        d = copy.deepcopy(doc)
        container(d)["startupProbe"]["httpGet"]["paht"] = "/x"
        self.assertTrue(schemas.check(d, schemas.CLOUD_RUN_SERVICE))
        d = copy.deepcopy(doc)
        d["spec"]["template"]["spec"]["nodeSelector"]["run.googleapis.com/accelerator"] = "nvidia-h100"
        self.assertTrue(schemas.check(d, schemas.CLOUD_RUN_SERVICE))
        d = copy.deepcopy(doc)
        container(d)["resources"]["limits"]["cpu"] = "2"
        self.assertTrue(schemas.check_cloud_run_rules(d))
        d = copy.deepcopy(doc)
        container(d)["startupProbe"]["failureThreshold"] = 5000
        self.assertTrue(schemas.check_cloud_run_rules(d))

    def test_probes_and_port_exist_in_kiln(self):
        routes = recipe.read(os.path.join(recipe.ROOT, "src/kiln/server/routes.cpp"))
        serve = recipe.read(os.path.join(recipe.ROOT, "src/kiln/cli/cmd_serve.cpp"))
        self.assertIn('getenv("PORT")', serve)
        default_port = int(re.search(r':\s*(\d+);\s*\n', serve[serve.index('getenv("PORT")'):]).group(1))
        _, stages = recipe.read_dockerfile()
        server = recipe.stage(stages, "server")
        self.assertIn(str(default_port), server.all("EXPOSE"))
        self.assertEqual(recipe.exec_form(server.all("ENTRYPOINT")[0])[:2], ["kiln", "serve"])
        for name in SERVICES:
            doc, _ = load(name)
            c = container(doc)
            port = c["ports"][0]["containerPort"]
            self.assertEqual(port, default_port, name)
            for probe, path in (("startupProbe", "/health/ready"), ("livenessProbe", "/health/live")):
                got = c[probe]["httpGet"]
                self.assertEqual(got["path"], path, name)
                self.assertEqual(got["port"], port, name)
                self.assertIn(f'path == "{path}"', routes, f"kiln has no route {path}")

    def test_serve_flags_match_the_bake(self):
        _, stages = recipe.read_dockerfile()
        bake = recipe.stage_env(stages, "bake")
        for name in SERVICES:
            doc, _ = load(name)
            c = container(doc)
            args = c["args"]
            self.assertEqual(arg_value(args, "--ctx-size"), bake["CTX_SIZE"], name)
            self.assertEqual(arg_value(args, "--kv-type"), bake["KV_TYPE"], name)
            self.assertEqual(arg_value(args, "--kv-block-size"), bake["KV_BLOCK_SIZE"], name)
            cc = doc["spec"]["template"]["spec"]["containerConcurrency"]
            self.assertEqual(int(arg_value(args, "--max-concurrency")), cc, name)
        gcs, _ = load("service-gcs.yaml")
        cmd = container(gcs)["command"]
        self.assertEqual(cmd[:3], ["kiln", "serve", "--model"])
        self.assertTrue(cmd[3].startswith("gs://"))
        ann = gcs["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(ann["run.googleapis.com/vpc-access-egress"], "all-traffic")
        self.assertTrue(json.loads(ann["run.googleapis.com/network-interfaces"]))


class CloudBuildYaml(unittest.TestCase):
    def test_keys_and_substitutions(self):
        for name in BUILDS:
            doc, text = load(name)
            self.assertEqual(schemas.check(doc, schemas.CLOUD_BUILD), [], name)
            self.assertEqual(schemas.substitution_problems(doc, text), [], name)
            self.assertEqual(doc["options"]["machineType"], "E2_HIGHCPU_32", name)
            self.assertGreaterEqual(int(doc["options"]["diskSizeGb"]), 200, name)
            self.assertIn("-docker.pkg.dev/", text, f"{name} pushes nowhere in Artifact Registry")
            _, stages = recipe.read_dockerfile()
            names = {s.name for s in stages}
            for t in re.findall(r"--target=(\S+)", text):
                self.assertIn(t, names, name)

    def test_misspelled_keys_fail(self):
        doc, text = load("cloudbuild.yaml")
        d = copy.deepcopy(doc)
        d["options"]["machinetype"] = d["options"].pop("machineType")
        self.assertTrue(any("machinetype" in e for e in schemas.check(d, schemas.CLOUD_BUILD)))
        d = copy.deepcopy(doc)
        d["steps"][0]["arg"] = d["steps"][0].pop("args")
        self.assertTrue(schemas.check(d, schemas.CLOUD_BUILD))
        d = copy.deepcopy(doc)
        d["option"] = d.pop("options")
        self.assertTrue(schemas.check(d, schemas.CLOUD_BUILD))
        d = copy.deepcopy(doc)
        d["options"]["machineType"] = "E2_HIGHCPU_64"
        self.assertTrue(schemas.check(d, schemas.CLOUD_BUILD))
        d = copy.deepcopy(doc)
        d["substitutions"]["_UNUSED"] = "x"
        self.assertTrue(schemas.substitution_problems(d, text))
        self.assertTrue(schemas.substitution_problems(doc, text + "\n# x\nfoo: ${_NOT_DEFINED}\n"))


class Plan(unittest.TestCase):
    def plan(self, *args):
        r = recipe.run([recipe.kiln_binary(), "plan", "--model", recipe.test_model(), *args])
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        return r.stdout

    def test_service_files_are_what_kiln_plan_writes(self):
        blocks = recipe.guide_blocks()
        for block, target in (("plan", "service.yaml"), ("plan-gcs", "service-gcs.yaml")):
            self.assertIn(block, blocks, f"docs/cloud-run.md has no <!-- tested: {block} --> block")
            (cmd,) = [c for c in blocks[block] if c.startswith("kiln plan")]
            argv = shlex.split(cmd)
            argv[argv.index("--model") + 1] = recipe.test_model()
            out_at = argv.index("--service-out") + 1
            self.assertEqual(argv[out_at], f"deploy/{target}")
            with tempfile.TemporaryDirectory() as tmp:
                argv[out_at] = os.path.join(tmp, target)
                r = recipe.run([recipe.kiln_binary()] + argv[1:])
                self.assertEqual(r.returncode, 0, r.stderr)
                got = recipe.read(argv[out_at])
            want = recipe.read(os.path.join(recipe.DEPLOY, target))
            self.assertEqual(recipe.yaml_body(got), recipe.yaml_body(want),
                             f"deploy/{target} differs from `{cmd}`: regenerate it")

    def test_measured_inputs_win(self):
        with tempfile.TemporaryDirectory() as tmp:
            bench = os.path.join(tmp, "bench.jsonl")
            with open(bench, "w") as f:
                for n, tps in ((8, 100.0), (16, 190.0), (32, 200.0)):
                    f.write(json.dumps({"test": f"streams{n}", "tokens_per_s": tps}) + "\n")
            out = os.path.join(tmp, "s.yaml")
            self.plan("--parallel", "8", "--bench-result", bench, "--service-out", out)
            doc = yaml.safe_load(recipe.read(out))
            # 16 streams reach 190 >= 90% of the peak 200: 8 + 16.
            self.assertEqual(doc["spec"]["template"]["spec"]["containerConcurrency"], 24)
            lt = os.path.join(tmp, "sweep.json")
            with open(lt, "w") as f:
                json.dump({"recommendation": {"concurrency": 37, "why": "ttft p99 within SLO"}}, f)
            self.plan("--parallel", "8", "--bench-result", bench, "--loadtest-result", lt,
                      "--service-out", out)
            doc = yaml.safe_load(recipe.read(out))
            self.assertEqual(doc["spec"]["template"]["spec"]["containerConcurrency"], 37)
            self.assertIn("37", container(doc)["args"])
            with open(lt, "w") as f:
                json.dump({"points": []}, f)
            r = recipe.run([recipe.kiln_binary(), "plan", "--model", recipe.test_model(),
                            "--loadtest-result", lt])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("recommendation", r.stderr)

    def test_real_loadtest_sweep(self):
        """The JSON `kiln loadtest sweep --json-out` really writes is what
        `kiln plan --loadtest-result` reads (the guide's tuning loop)."""
        kiln = recipe.kiln_binary()
        port = recipe.free_port()
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.Popen(
                [kiln, "serve", "--model", recipe.test_model(), "--device", "cpu", "--threads", "1",
                 "--host", "127.0.0.1", "--port", str(port), "--ctx-size", "512", "--parallel", "2",
                 "--request-log", os.path.join(tmp, "requests.jsonl")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                self.assertTrue(recipe.wait_ready(port, proc), "kiln serve did not become ready")
                sweep = os.path.join(tmp, "sweep.json")
                r = recipe.run([kiln, "loadtest", "sweep", "--url", f"http://127.0.0.1:{port}",
                                "--concurrency", "1,2", "--duration", "2", "--output-len", "4",
                                "--out", os.path.join(tmp, "out"), "--json-out", sweep,
                                "--slo-ttft-p99", "60000", "--shared-preamble", "2,8",
                                "--preamble-len", "60", "--prompt-len", "8"], timeout=300)
                self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            want = json.loads(recipe.read(sweep))["recommendation"]["concurrency"]
            out = os.path.join(tmp, "s.yaml")
            self.plan("--parallel", "8", "--loadtest-result", sweep, "--service-out", out)
            doc = yaml.safe_load(recipe.read(out))
            self.assertEqual(doc["spec"]["template"]["spec"]["containerConcurrency"], want)
            args = container(doc)["args"]
            self.assertEqual(int(arg_value(args, "--max-concurrency")), want)
            self.assertLessEqual(int(arg_value(args, "--parallel")), want)

            # The guide's prefix-report command on the log kiln serve wrote.
            (cmd,) = recipe.guide_blocks()["prefix-report"]
            argv = shlex.split(cmd)
            argv[argv.index("requests.jsonl")] = os.path.join(tmp, "requests.jsonl")
            argv[argv.index("--model") + 1] = recipe.test_model()
            r = recipe.run([kiln] + argv[1:] + ["--json"])
            self.assertEqual(r.returncode, 0, r.stderr)
            report = json.loads(r.stdout)
            self.assertGreater(report["requests"], 0)
            self.assertGreater(report["reusable_tokens"], 0)
            self.assertTrue(report["preambles"])
            # (The log's cached_tokens can't bound it: exact response-cache
            # hits report the whole prompt as cached.)

    def test_plan_matches_serve(self):
        """kiln plan --gpu-memory G gives the KV pool K; kiln serve --device cpu
        --kv-memory K must report the same bytes/token, tokens and sequences."""
        flags = ["--ctx-size", "512", "--parallel", "4", "--kv-block-size", "16"]
        with tempfile.TemporaryDirectory() as tmp:
            j = os.path.join(tmp, "plan.json")
            self.plan(*flags, "--gpu-memory", "64G", "--json-out", j)
            p = json.loads(recipe.read(j))
            per_token = p["kv_bytes_per_token"]
            # Room for 3 full contexts and a bit: under kiln serve's CPU cap
            # (2 x parallel contexts), so both sides are bounded by memory alone.
            need = p["weight_bytes"] + p["scratch_bytes"] + 3 * 512 * per_token + 100 * per_token
            gpu_memory = str(int(need / 0.9) + 1)
            self.plan(*flags, "--gpu-memory", gpu_memory, "--json-out", j)
            p = json.loads(recipe.read(j))
            self.assertEqual(p["full_context_sequences"], 3)
            proc = subprocess.Popen(
                [recipe.kiln_binary(), "serve", "--model", recipe.test_model(), "--device", "cpu",
                 "--kv-memory", str(p["kv_pool_bytes"]), "--host", "127.0.0.1", "--port", "0",
                 "--threads", "1", *flags],
                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            line = ""
            try:
                for line in proc.stderr:
                    if "KV pool:" in line:
                        break
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
            m = re.search(r"KV pool: (\d+) blocks x (\d+) tokens = (\d+) tokens, .*?, (\d+) bytes per "
                          r"token; (\d+) sequences", line)
            self.assertTrue(m, f"kiln serve printed no KV pool line: {line!r}")
            blocks, _, tokens, bpt, seqs = map(int, m.groups())
            self.assertEqual(bpt, p["kv_bytes_per_token"])
            self.assertEqual(tokens, p["kv_tokens"])
            self.assertEqual(blocks, p["kv_blocks"])
            self.assertEqual(seqs, p["full_context_sequences"])


class Guide(unittest.TestCase):
    def test_guide_commands_match_the_recipe(self):
        blocks = recipe.guide_blocks()
        global_args, stages = recipe.read_dockerfile()
        args = set(global_args)
        for s in stages:
            args |= {a.partition("=")[0] for a in s.all("ARG")}
        for name in ("build", "cloudbuild", "deploy", "layers"):
            self.assertIn(name, blocks, f"docs/cloud-run.md has no <!-- tested: {name} --> block")
        for cmd in blocks["build"]:
            if "docker" in cmd and " build" in cmd:
                for a in re.findall(r"--build-arg[ =](\w+)=", cmd):
                    self.assertIn(a, args, f"guide passes --build-arg {a}, the Dockerfile has no ARG")
                self.assertIn("-f deploy/Dockerfile", cmd)
                for t in re.findall(r"--target[ =](\S+)", cmd):
                    self.assertIn(t, {s.name for s in stages})
        for cmd in blocks["cloudbuild"]:
            m = re.search(r"--config[ =](\S+)", cmd)
            if not m:
                continue
            doc, _ = load(os.path.basename(m.group(1)))
            for kv in re.findall(r"--substitutions[ =](\S+)", cmd):
                for pair in kv.split(","):
                    self.assertIn(pair.partition("=")[0], doc["substitutions"], cmd)
        deployed = [c for c in blocks["deploy"] if "services replace" in c]
        self.assertTrue(deployed)
        for cmd in deployed:
            path = shlex.split(cmd)[4]
            self.assertTrue(os.path.exists(os.path.join(recipe.ROOT, path)), cmd)


if __name__ == "__main__":
    unittest.main(verbosity=2)
