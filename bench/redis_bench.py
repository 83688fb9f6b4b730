"""bench/redis_bench.py: end-to-end Redis Streams ingest benchmark (driven by bench/redis.sh).

Starts its own redis-server on a free loopback port and N batchd processes sharing one
consumer group, then a producer writes FRAMES frames spread over CAMERAS camera streams as
fast as Redis takes them (pipelined XADD). It waits until every frame has a result and
reports:
  - end-to-end frames/s: frames / (last result written - first frame written), both read from
    the entry ids, i.e. Redis's own clock;
  - latency XADD -> result: result id time - source id time, per frame (ms resolution: stream
    ids carry milliseconds), p50 / p99 / max.
Prints one Markdown table row per run.

With --drain the batchd processes are paused (SIGSTOP) once they joined the group, the
producer writes every frame, and the processes are resumed: frames/s is then frames / (last
result - resume), i.e. batchd and Redis alone on the machine with a full backlog, as an
in-process run has its inputs ready (the latency of a backlog says nothing and is left out).
--warmup N first runs N frames through the running processes and waits for their results, as
an in-process run warms up before it measures: ONNX Runtime's first run of each batch size
plans and faults in its memory (about 2 s of a cold drain of mobilenet_v2 on this machine).
Warm-up frames carry seq "w<n>" and are left out of every figure.

  redis_bench.py --bin build/batchd --model sim|mlp|mobilenet_v2 [--models DIR]
                 [--procs 1|2] [--cameras 100] [--frames 100000] [--drain]
                 [--max-batch N] [--instances N] [--warmup N]
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from redis_util import RedisServer  # noqa: E402

SHAPES = {"sim": ("INPUT0", 16), "mlp": ("input", 64), "mobilenet_v2": ("input", 3 * 224 * 224)}


def make_repo(root, model, models_dir, max_batch=0, instances=0, spinning=False):
    name, dim = SHAPES[model]
    d = os.path.join(root, model)
    os.makedirs(os.path.join(d, "1"), exist_ok=True)
    redis_cfg = {"streams": "frames:*"}
    if model == "sim":
        cfg = {"backend": "sim", "max_batch_size": 64,
               "inputs": [{"name": name, "datatype": "FP32", "dims": [dim]}],
               "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [dim]}],
               "sim": {"latency_us": 20, "per_item_us": 1},
               "dynamic_batching": {"max_queue_size": 8192}, "redis": redis_cfg}
    else:
        os.symlink(os.path.realpath(os.path.join(models_dir, model, "1", "model.onnx")),
                   os.path.join(d, "1", "model.onnx"))
        cfg = {"dynamic_batching": {"max_queue_size": 8192}, "redis": redis_cfg}
        if max_batch:
            cfg["max_batch_size"] = max_batch
        if instances:  # that many sessions of one ONNX Runtime thread each
            cfg["instances"] = instances
            cfg["threads_per_instance"] = 1
        if spinning:
            cfg["intra_op_spinning"] = True
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return dim


def start_batchd(binary, repo, url, consumer, log_path):
    log = open(log_path, "wb")
    p = subprocess.Popen([binary, "serve", "--model-repository", repo, "--http-port", "0",
                          "--host", "127.0.0.1", "--redis", url, "--redis-consumer", consumer,
                          "--log-level", "info"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return p


def http_port(log_path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            m = re.search(rb"http listening host=127\.0\.0\.1 port=(\d+)", f.read())
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise RuntimeError("batchd did not log its port (see %s)" % log_path)


def batches(ports, model):
    """Rows and executions so far over every process, from /metrics."""
    rows = execs = 0
    for port in ports:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith("batchd_inference_items_total{model=\"%s\"" % model):
                rows += float(line.rsplit(" ", 1)[1])
            elif line.startswith("batchd_inference_executions_total{model=\"%s\"" % model):
                execs += float(line.rsplit(" ", 1)[1])
    return rows, execs


def produce(r, cameras, frames, dim, tag=""):
    row = np.random.default_rng(1).standard_normal(dim).astype("<f4").tobytes()
    batch = max(1, min(1000, (8 << 20) // len(row)))  # a round trip carries <= 8 MiB
    pipe = r.pipeline(transaction=False)
    n = 0
    for seq in range(frames // cameras):
        for cam in range(cameras):
            pipe.xadd("frames:cam%d" % cam,
                      {"input": row, "camera": str(cam), "seq": tag + str(seq)})
            n += 1
            if n % batch == 0:
                pipe.execute()
    pipe.execute()
    return (frames // cameras) * cameras


def wait_results(r, cameras, n, timeout):
    """Until the result streams hold n entries in all (or timeout seconds passed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(r.xlen("results:frames:cam%d" % c) for c in range(cameras)) >= n:
            return
        time.sleep(0.2)


def cpu_s(pid):
    """User + system CPU seconds of a process so far, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def id_ms(eid):
    return int(eid.split(b"-")[0])


def collect(r, cameras):
    lat = []
    first_src, last_res = None, 0
    for cam in range(cameras):
        key = "results:frames:cam%d" % cam
        last = "-"
        while True:
            chunk = r.xrange(key, min=last, max="+", count=10000)
            if last != "-":
                chunk = chunk[1:]
            if not chunk:
                break
            for eid, f in chunk:
                if f.get(b"seq", b"").startswith(b"w"):
                    continue  # a warm-up frame's
                src = id_ms(f[b"source_id"])
                res = id_ms(eid)
                lat.append(res - src)
                first_src = src if first_src is None else min(first_src, src)
                last_res = max(last_res, res)
            last = chunk[-1][0]
    return np.array(lat), first_src, last_res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/batchd")
    ap.add_argument("--model", default="sim")
    ap.add_argument("--models", default="../shared/models")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--cameras", type=int, default=100)
    ap.add_argument("--frames", type=int, default=100000)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--drain", action="store_true")
    ap.add_argument("--max-batch", type=int, default=0)
    ap.add_argument("--instances", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--unix", action="store_true",
                    help="batchd reaches Redis through its unix socket (unix://) instead of TCP")
    ap.add_argument("--spinning", choices=("on", "off"), default="off",
                    help="the ONNX model's intra_op_spinning (config.json)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="redis-bench-")
    sock = os.path.join(work, "redis.sock") if a.unix else None
    rs = RedisServer(os.path.join(work, "redis"), unixsocket=sock).start()
    url = "unix://" + sock if a.unix else rs.url
    r = rs.client()
    repo = os.path.join(work, "repo")
    dim = make_repo(repo, a.model, a.models, a.max_batch, a.instances, a.spinning == "on")
    for cam in range(a.cameras):  # the group exists before the clock starts
        r.xgroup_create("frames:cam%d" % cam, "batchd", id="$", mkstream=True)
    logs = [os.path.join(work, "batchd-%d.log" % i) for i in range(a.procs)]
    procs = [start_batchd(a.bin, repo, url, "bench-%d" % i, logs[i]) for i in range(a.procs)]
    model = a.model + (" (unix)" if a.unix else "")
    try:
        ports = [http_port(lp) for lp in logs]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every process has joined every stream
            cons = r.xinfo_consumers("frames:cam%d" % (a.cameras - 1), "batchd")
            if len(cons) >= a.procs:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        warm = produce(r, a.cameras, a.warmup, dim, tag="w") if a.warmup else 0
        if warm:
            wait_results(r, a.cameras, warm, a.timeout)
        rows0, execs0 = batches(ports, a.model)
        if a.drain:
            for p in procs:
                p.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        n = produce(r, a.cameras, a.frames, dim)
        t_prod = time.monotonic() - t0
        if a.drain:
            sec, usec = r.time()
            resumed_ms = sec * 1000 + usec // 1000
            cpu0 = [cpu_s(rs.proc.pid)] + [cpu_s(p.pid) for p in procs]
            for p in procs:
                p.send_signal(signal.SIGCONT)
        wait_results(r, a.cameras, warm + n, a.timeout)
        if a.drain:
            cpu1 = [cpu_s(rs.proc.pid)] + [cpu_s(p.pid) for p in procs]
        lat, first, last = collect(r, a.cameras)
        rows1, execs1 = batches(ports, a.model)
        mean_batch = (rows1 - rows0) / (execs1 - execs0) if execs1 > execs0 else 0.0
        if a.drain:
            fps = n / max(1e-3, (last - resumed_ms) / 1000.0)
            redis_ms = (cpu1[0] - cpu0[0]) * 1000 / n
            batchd_ms = sum(cpu1[1:]) - sum(cpu0[1:])
            batchd_ms = batchd_ms * 1000 / n
            print("| %s | %d | drain | %d | %d | %d | %.0f | %.0f | %.1f | - | - | - |"
                  " CPU ms/frame: redis %.3f, batchd %.3f%s |" % (
                      model, a.procs, a.cameras, n, len(lat), n / t_prod, fps, mean_batch,
                      redis_ms, batchd_ms, "; after %d warm-up frames" % warm if warm else ""))
        else:
            fps = n / max(1e-3, (last - first) / 1000.0)
            print("| %s | %d | live | %d | %d | %d | %.0f | %.0f | %.1f | %d | %d | %d |" % (
                model, a.procs, a.cameras, n, len(lat), n / t_prod, fps, mean_batch,
                np.percentile(lat, 50), np.percentile(lat, 99), lat.max()))
        sys.stdout.flush()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        rs.stop()


if __name__ == "__main__":
    main()
