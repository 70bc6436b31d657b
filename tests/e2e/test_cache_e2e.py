"""End-to-end tests of the response caches with real `kiln serve` processes:
two instances sharing a real redis-server (started here on a loopback port,
no persistence), Redis killed mid-run (both keep serving, no client error)
and restarted (sharing resumes), and --cache-dir across a restart."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_server import Server, free_port  # noqa: E402

REDIS = shutil.which("redis-server")


class Redis:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="kiln-e2e-redis-")
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def until(f, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if f():
            return True
        time.sleep(0.05)
    return f()


def ask(s, prompt):
    """A greedy completion; returns (status, x-kiln-cache, text)."""
    st, body, r = s.request("POST", "/v1/completions",
                            {"prompt": prompt, "max_tokens": 6, "temperature": 0})
    import json
    j = json.loads(body)
    return st, r.getheader("x-kiln-cache"), j["choices"][0]["text"] if st == 200 else j


def entries(s):
    return s.metric("kiln_response_cache_entries")  # the exact cache's series comes first


@unittest.skipIf(REDIS is None, "redis-server is not installed")
class SharedThroughRedis(unittest.TestCase):
    def test_two_instances_redis_killed_and_back(self):
        redis = Redis()
        a = b = None
        try:
            a = Server("--cache-redis", redis.url, cache=True)
            b = Server("--cache-redis", redis.url, cache=True)
            self.assertTrue(until(lambda: a.metric("kiln_response_cache_redis_connected") == 1 and
                                  b.metric("kiln_response_cache_redis_connected") == 1))
            st, how, text = ask(a, "alpha beta gamma")
            self.assertEqual((st, how), (200, "miss"))
            self.assertTrue(until(lambda: entries(b) == 1))
            generated = b.metric("kiln_engine_generated_tokens_total")
            st, how, text_b = ask(b, "alpha beta gamma")
            self.assertEqual((st, how, text_b), (200, "exact", text))
            self.assertEqual(b.metric("kiln_engine_generated_tokens_total"), generated)

            redis.kill()
            for s, p in ((a, "river stone"), (b, "cloud light")):
                t0 = time.time()
                st, how, _ = ask(s, p)
                self.assertEqual((st, how), (200, "miss"))
                st, how, _ = ask(s, p)
                self.assertEqual((st, how), (200, "exact"))  # the local cache still answers
                self.assertLess(time.time() - t0, 30)
            self.assertTrue(until(lambda: a.metric("kiln_response_cache_redis_connected") == 0))

            redis.start()  # same port, empty
            self.assertTrue(until(lambda: a.metric("kiln_response_cache_redis_connected") == 1 and
                                  b.metric("kiln_response_cache_redis_connected") == 1))
            # Entries cached while Redis was away were queued and now travel.
            self.assertTrue(until(lambda: entries(a) == 3 and entries(b) == 3))
            self.assertEqual(ask(b, "river stone")[1], "exact")
            self.assertEqual(ask(a, "cloud light")[1], "exact")
            self.assertEqual(ask(b, "paper window")[1], "miss")
            self.assertTrue(until(lambda: entries(a) == 4))
            self.assertEqual(ask(a, "paper window")[1], "exact")
            self.assertIn("reconnecting in the background", a.output())
        finally:
            for s in (a, b):
                if s:
                    s.terminate()
                    s.__exit__()
            redis.close()


class CacheDir(unittest.TestCase):
    def test_survives_a_restart_and_opt_out(self):
        d = tempfile.mkdtemp(prefix="kiln-e2e-cachedir-")
        try:
            with Server("--cache-dir", d, cache=True) as s:
                st, how, text = ask(s, "silver music")
                self.assertEqual(how, "miss")
                st, body, r = s.request("POST", "/v1/completions",
                                        {"prompt": "silver music", "max_tokens": 6,
                                         "temperature": 0, "cache": False})
                self.assertEqual(r.getheader("x-kiln-cache"), "miss; bypass=request")
                self.assertEqual(s.terminate(), 0)
            with Server("--cache-dir", d, cache=True) as s:
                self.assertEqual(ask(s, "silver music")[1:], ("exact", text))
                s.terminate()
            with Server("--cache-dir", d, cache=False) as s:  # the kill switch
                st, body, r = s.request("POST", "/v1/completions",
                                        {"prompt": "silver music", "max_tokens": 6,
                                         "temperature": 0})
                self.assertIsNone(r.getheader("x-kiln-cache"))
                s.terminate()
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
