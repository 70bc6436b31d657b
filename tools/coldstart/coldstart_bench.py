#!/usr/bin/env python3
"""Cold-start benchmark for `kiln serve` (issue: cold start). Standard library only.

Measures, on the machine it runs on:
  floor      exec -> exit of a process that only creates a CUDA context
  warm       exec of `kiln serve --model ARTIFACT` -> first 200 of /health/ready,
             file in the page cache
  cold       the same after evicting the artifact from the page cache
             (posix_fadvise DONTNEED; residency printed with fincore when present)
  read rate  best parallel read rate of the artifact's weights.bin from disk
             (8, 16 and 32 reader threads)
  cold plain the cold start of --plain-artifact (the same weights without baked
             prefixes), against the bound weights.bin / read rate + 0.3 s
  first req  logits hash (top logprobs of a greedy completion) and TTFT of the
             first request after ready vs. a steady-state request
  preamble   TTFT of a request starting with the baked preamble vs. one with
             only the non-baked suffix

Prints a table and writes JSON lines to --json-out.
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time


def wait_ready(port, proc, timeout=120.0):
    """Polls /health/ready every 2 ms; returns the time of the first 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kiln serve exited with {proc.returncode} before ready")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/health/ready")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return time.monotonic()
        except (ConnectionError, OSError, http.client.HTTPException):
            pass
        time.sleep(0.002)
    raise RuntimeError("not ready in time")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def evict(path):
    """Drops a file's pages from the page cache (no root needed for clean pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def residency(path):
    if not shutil.which("fincore"):
        return "fincore not installed"
    r = subprocess.run(["fincore", "-b", "-n", path], capture_output=True, text=True)
    return r.stdout.strip() or r.stderr.strip()


def parallel_read_rate(path, threads=8, chunk=64 << 20):
    """Best-effort disk read rate: evict, then read with N threads (pread releases the GIL)."""
    evict(path)
    size = os.path.getsize(path)
    n_chunks = (size + chunk - 1) // chunk
    nxt = [0]
    lock = threading.Lock()

    def work():
        fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= n_chunks:
                    return
                os.pread(fd, chunk, i * chunk)
        finally:
            os.close(fd)

    t0 = time.monotonic()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return size / (time.monotonic() - t0)


def post(port, path, body, stream=False):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.monotonic()
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if not stream:
        data = json.loads(r.read())
        return data, time.monotonic() - t0, None
    ttft = None
    chunks = []
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        if ttft is None:
            ttft = time.monotonic() - t0
        chunks.append(json.loads(payload))
    return chunks, time.monotonic() - t0, ttft


def ttft_hash(port, prompt):
    """TTFT of a streamed greedy completion and a hash of its top logprobs."""
    chunks, _, t = post(port, "/v1/completions", {"prompt": prompt, "max_tokens": 4, "temperature": 0,
                                                   "logprobs": 5, "stream": True, "cache": False}, stream=True)
    lp = [c["choices"][0].get("logprobs") for c in chunks if c.get("choices")]
    return t, json.dumps(lp, sort_keys=True)


def ttft(port, prompt):
    _, _, t = post(port, "/v1/completions", {"prompt": prompt, "max_tokens": 1, "temperature": 0,
                                              "stream": True, "cache": False}, stream=True)
    return t


def start(kiln, artifact, port, extra):
    cmd = [kiln, "serve", "--model", artifact, "--port", str(port), "--host", "127.0.0.1"] + extra
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
    try:
        t_ready = wait_ready(port, proc)
    except RuntimeError:
        time.sleep(0.2)
        print("".join(log[-40:]), file=sys.stderr)
        raise
    return proc, t_ready - t0, log


def stop(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--floor-bin", help="binary that only creates a CUDA context")
    ap.add_argument("--preamble-file", help="the baked preamble text (warm prompt)")
    ap.add_argument("--plain-artifact",
                    help="the same model baked without warm prompts: cold starts of it too")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--serve-args", default="")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    extra = a.serve_args.split()
    weights = os.path.join(a.artifact, "weights.bin")
    rows = []

    def rec(name, value, unit, note=""):
        rows.append({"test": name, "value": value, "unit": unit, "note": note})
        print(f"[ coldstart ] {name}: {value:.4g} {unit} {note}", flush=True)

    if a.floor_bin:
        ts = []
        for _ in range(a.repeats + 1):
            t0 = time.monotonic()
            subprocess.run([a.floor_bin], check=True)
            ts.append(time.monotonic() - t0)
        rec("floor_cuda_context_s", min(ts[1:]), "s", f"all {['%.3f' % t for t in ts]}")

    # Page cache warm: one start to warm it, then the measured ones.
    warm = []
    log = []
    for i in range(a.repeats + 1):
        port = free_port()
        proc, t, log = start(a.kiln, a.artifact, port, extra)
        stop(proc)
        if i > 0:
            warm.append(t)
    rec("ready_warm_s", min(warm), "s", f"median {statistics.median(warm):.3f}, all {['%.3f' % t for t in warm]}")
    print("".join(log[-30:]))

    size = os.path.getsize(weights)
    # The best of a few reader counts: an NVMe disk may want more requests in
    # flight than kiln's 8 loader threads give it; the bound uses the best.
    rates = {n: parallel_read_rate(weights, threads=n) for n in (8, 16, 32)}
    best = max(rates, key=rates.get)
    rate = rates[best]
    rec("disk_parallel_read_GBps", rate / 1e9, "GB/s",
        f"{size / 1e9:.2f} GB, best of " + ", ".join(f"{n} threads {r / 1e9:.2f}" for n, r in rates.items()))
    rec("cold_bound_s", size / rate + 0.3, "s", "weights.bin bytes / best parallel read rate + 0.3 s")

    def cold_starts(artifact):
        out = []
        for _ in range(max(1, a.repeats - 1)):
            for f in ("weights.bin", "warm.bin"):
                evict(os.path.join(artifact, f))
            print("residency before cold start:", residency(os.path.join(artifact, "weights.bin")))
            port = free_port()
            proc, t, log = start(a.kiln, artifact, port, extra)
            out.append(t)
            stop(proc)
            # kiln's own account of the cold start (where the time above the bound went)
            print("".join(l for l in log if "start-up:" in l or "streamed to the GPU" in l), end="")
        return out

    # The same weights without baked prefixes: what the bound above measures.
    if a.plain_artifact:
        cold = cold_starts(a.plain_artifact)
        rec("ready_cold_plain_s", min(cold), "s",
            f"artifact without warm prompts, all {['%.3f' % t for t in cold]}; bound {size / rate + 0.3:.3f} s")
    # With baked prefixes kiln reads warm.bin too before it is ready.
    warm_size = os.path.getsize(os.path.join(a.artifact, "warm.bin"))
    cold = cold_starts(a.artifact)
    rec("ready_cold_s", min(cold), "s",
        f"all {['%.3f' % t for t in cold]}; with warm.bin's {warm_size / 1e6:.0f} MB the bytes read "
        f"give a bound of {(size + warm_size) / rate + 0.3:.3f} s")

    # First request after ready vs. steady state.
    port = free_port()
    proc, t, log = start(a.kiln, a.artifact, port, extra)
    try:
        # Shorter than one KV block, so nothing comes from the prefix cache:
        # the very first request after ready and the steady-state ones are
        # full computations of the same prompt.
        short = "The capital of France is"
        first_t, h1 = ttft_hash(port, short)
        steady = [ttft_hash(port, short) for _ in range(5)]
        med = statistics.median(t for t, _ in steady)
        rec("first_request_ttft_ratio", first_t / med, "x",
            f"first {first_t * 1e3:.1f} ms, steady {med * 1e3:.1f} ms; "
            f"logits hash equal to steady state: {all(h == h1 for _, h in steady)}")
        if a.preamble_file:
            pre = open(a.preamble_file).read()
            suffix = " Question: what is the first word of the text above?"
            baked = ttft(port, pre + suffix)   # first use of the baked preamble
            # How much of it came from the restored blocks (non-streamed: usage).
            d, _, _ = post(port, "/v1/completions", {"prompt": pre + suffix + " (again)", "max_tokens": 1,
                                                      "temperature": 0, "cache": False})
            cached = (d.get("usage", {}).get("prompt_tokens_details") or {}).get("cached_tokens")
            warm_hit = statistics.median([ttft(port, pre + suffix + f" ({i})") for i in range(3)])
            only = statistics.median([ttft(port, suffix + f" ({i})") for i in range(3)])
            rec("baked_preamble_ttft_ratio", baked / only, "x",
                f"first with preamble {baked * 1e3:.1f} ms, suffix only {only * 1e3:.1f} ms, "
                f"later preamble hits {warm_hit * 1e3:.1f} ms; cached tokens {cached} of "
                f"{d.get('usage', {}).get('prompt_tokens')}")
    finally:
        stop(proc)

    if a.json_out:
        with open(a.json_out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    sys.exit(main())
