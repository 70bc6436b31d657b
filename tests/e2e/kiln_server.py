"""Starts a real `kiln serve` on 127.0.0.1 for the end-to-end tests and talks
HTTP to it with the standard library only (no third-party client)."""
import http.client
import json
import os
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("KILN_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))
KILN = os.environ.get("KILN_BINARY", os.path.join(ROOT, "build", "kiln"))
MODEL = os.environ.get("KILN_E2E_MODEL",
                       os.path.join(SHARED, "testdata", "reference", "llama3-f16.gguf"))
CHAT_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chatml.jinja")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    # cache=False starts kiln with --no-response-cache: these tests exercise the
    # engine, and a repeated greedy request would otherwise be answered from the
    # exact response cache (test_cache_e2e.py passes cache=True).
    def __init__(self, *extra, ctx=512, parallel=8, max_concurrency=None, ready_timeout=120,
                 cache=False):
        self.port = free_port()
        args = [KILN, "serve", "-m", MODEL, "--host", "127.0.0.1", "--port", str(self.port),
                "--ctx-size", str(ctx), "--parallel", str(parallel),
                "--chat-template", CHAT_TEMPLATE, "--model-name", "tiny", "--threads", "2"]
        if max_concurrency:
            args += ["--max-concurrency", str(max_concurrency)]
        if not cache:
            args += ["--no-response-cache"]
        args += list(extra)
        self.log = open(os.path.join("/tmp", f"kiln-e2e-{self.port}.log"), "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout):
        deadline = time.time() + timeout
        saw_port_open = False
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiln serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status, body = self.get("/health/ready")
                saw_port_open = True
                if status == 200:
                    return
                assert status == 503, status
                assert json.loads(body)["status"] in ("loading", "warming"), body
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"not ready after {timeout} s (port open: {saw_port_open}):\n{self.output()}")

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def conn(self, timeout=120):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or self.conn()
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        if conn is None:
            c.close()
        return r.status, out, r

    def get(self, path):
        s, b, _ = self.request("GET", path)
        return s, b

    def post(self, path, body, headers=None):
        s, b, _ = self.request("POST", path, body, headers)
        return s, json.loads(b) if b else None

    def stream(self, path, body):
        """POSTs with stream=true; returns the list of JSON events and whether [DONE] came."""
        c = self.conn()
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, (r.status, r.read())
        events, done = [], False
        for raw in r.read().decode().split("\n\n"):
            if not raw:
                continue
            assert raw.startswith("data: "), raw
            payload = raw[6:]
            if payload == "[DONE]":
                done = True
            else:
                events.append(json.loads(payload))
        c.close()
        return events, done

    def metric(self, name):
        _, body = self.get("/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def terminate(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
