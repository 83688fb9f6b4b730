"""bench/soak.py: does batchd's memory stay flat under a long mixed load? (DESIGN: "no growth
over a long soak"; `make soak`, SOAK_MINUTES=10 by default.)

Serves a copy of the demo repository (`make demo`: digits, digits_image, sim_echo) plus
`echo2`, a copy of sim_echo that is unloaded and loaded again every 20 s, and, when
redis-server is installed, ingests ten Redis streams into sim_echo. For MINUTES it runs side by
side:
  - http:   `batchd bench` open loop, binary tensors on digits at RATE requests/s;
  - edge:   one client cycling through requests that must fail or succeed in a known way: bad
            JSON, a wrong shape, an unknown model (400, as Triton), a body over --max-body-bytes, a body cut off
            by a closed socket, a gzip body, classification, a PNG and a corrupt PNG on
            digits_image, the metadata, config, statistics, index and metrics endpoints;
  - ws:     WebSockets of 50 requests each on sim_echo; every fifth socket is dropped with 20
            requests in flight and nothing read;
  - reload: echo2 unloaded and loaded every 20 s while a client infers on it (200, or 400/503
            while it is away);
  - redis:  100 frames/s over ten streams (MAXLEN ~ 2000 each), results trimmed to 1000;
            at the end every frame written must have been acked.
Every 5 s it samples the server's RSS, open file descriptors and threads from /proc. At the end
it stops the server with SIGTERM and prints: the RSS once warm (after the first fifth), at the
end and at most, the least-squares slope of RSS over the last four fifths in MiB per hour, the
file descriptors and threads at the start and the end, what each client did, every answer it
did not expect, and the server's exit status.

  soak.py --bin build/batchd --demo models-demo [--minutes 10] [--rate 2000] [--no-redis]
"""
import argparse
import asyncio
import gzip
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))


class Tally:
    """Counts per client and outcome, and the first few unexpected answers (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = []
        self.unexpected_n = 0

    def add(self, client, what, ok=True, detail=""):
        with self.lock:
            key = (client, what if ok else "UNEXPECTED " + what)
            self.counts[key] = self.counts.get(key, 0) + 1
            if not ok:
                self.unexpected_n += 1
                if len(self.unexpected) < 20:
                    self.unexpected.append("%s %s: %s" % (client, what, detail[:200]))


def proc_sample(pid):
    status = open("/proc/%d/status" % pid).read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024.0
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds, threads


def slope_per_hour(points):
    """Least-squares slope of (seconds, MiB) points, in MiB per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    return sxy / sxx * 3600.0 if sxx else 0.0


def make_repo(demo, work, redis_url):
    repo = os.path.join(work, "repo")
    os.makedirs(repo)
    for name in ("digits", "digits_image", "sim_echo"):
        shutil.copytree(os.path.join(demo, name), os.path.join(repo, name))
    shutil.copytree(os.path.join(demo, "sim_echo"), os.path.join(repo, "echo2"))
    if redis_url:
        path = os.path.join(repo, "sim_echo", "config.json")
        cfg = json.load(open(path))
        cfg["redis"] = {"streams": "soak:*", "results": "soak-results:{stream}",
                        "results_maxlen": 1000}
        json.dump(cfg, open(path, "w"))
    return repo


def start_server(binary, repo, work, redis_url):
    log = open(os.path.join(work, "server.log"), "wb")
    cmd = [binary, "serve", "--model-repository", repo, "--http-port", "0",
           "--model-control", "explicit", "--max-body-bytes", str(1 << 20)]
    if redis_url:
        cmd += ["--redis", redis_url]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(300):
        with open(os.path.join(work, "server.log"), "rb") as f:
            m = re.search(rb"http listening host=\S+ port=(\d+)", f.read())
        if m:
            url = "http://127.0.0.1:%s" % m.group(1).decode()
            for _ in range(300):
                try:
                    if requests.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                        return p, url
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            break
        if p.poll() is not None:
            break
        time.sleep(0.1)
    p.kill()
    sys.exit("soak: the server did not become ready; its log:\n" +
             open(os.path.join(work, "server.log")).read())


def edge_client(url, demo, stop, tally):
    host, port = url.split("//")[1].split(":")
    port = int(port)
    s = requests.Session()
    example = json.load(open(os.path.join(demo, "digits", "example.json")))
    png = open(os.path.join(demo, "digits_image", "sample_3.png"), "rb").read()
    infer = url + "/v2/models/digits/infer"

    def expect(what, resp, code):
        ok = resp.status_code == code
        if ok and code >= 400:
            ok = "error" in resp.json()
        tally.add("edge", what, ok, "%d %s" % (resp.status_code, resp.text))

    def cut_body():
        with socket.create_connection((host, port), timeout=10) as c:
            c.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n" +
                      b"{" * 1000)
        tally.add("edge", "body cut off by close")

    bad_shape = json.loads(json.dumps(example))
    bad_shape["inputs"][0]["shape"] = [1, 63]
    while not stop.is_set():
        try:
            expect("bad JSON 400", s.post(infer, data=b"{\"inputs\": [", timeout=10), 400)
            expect("wrong shape 400", s.post(infer, json=bad_shape, timeout=10), 400)
            expect("unknown model 400",
                   s.post(url + "/v2/models/nope/infer", json=example, timeout=10), 400)
            expect("body over the limit 413",
                   s.post(infer, data=b" " * (2 << 20), timeout=10), 413)
            cut_body()
            expect("gzip body 200",
                   s.post(infer, data=gzip.compress(json.dumps(example).encode()),
                          headers={"Content-Encoding": "gzip"}, timeout=10), 200)
            cls = dict(example, outputs=[{"name": "probabilities",
                                           "parameters": {"classification": 3}}])
            r = s.post(infer, json=cls, timeout=10)
            expect("classification 200" if r.status_code == 200 else "classification",
                   r, 200 if r.status_code == 200 else 400)
            expect("PNG 200", s.post(url + "/v2/models/digits_image/infer", data=png,
                                     headers={"Content-Type": "image/png"}, timeout=10), 200)
            expect("corrupt PNG 400",
                   s.post(url + "/v2/models/digits_image/infer", data=png[:100],
                          headers={"Content-Type": "image/png"}, timeout=10), 400)
            for path in ("/v2/models/digits", "/v2/models/digits/config",
                         "/v2/models/digits/stats", "/metrics"):
                expect("GET " + path, s.get(url + path, timeout=10), 200)
            expect("POST /v2/repository/index", s.post(url + "/v2/repository/index",
                                                       timeout=10), 200)
        except requests.RequestException as e:
            tally.add("edge", "request failed", False, repr(e))
            time.sleep(0.5)


def ws_client(url, stop, tally):
    import websockets
    host_port = url.split("//")[1]
    req = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                                  "data": [1.0, 2.5, -3.0, 4.25]}]})

    async def one(n):
        async with websockets.connect("ws://%s/v2/models/sim_echo/stream" % host_port,
                                      ping_interval=None, compression=None,
                                      open_timeout=10, close_timeout=2) as ws:
            if n % 5 == 4:
                for i in range(20):
                    await ws.send(req)
                ws.transport.abort()
                tally.add("ws", "socket dropped with 20 in flight")
                return
            for i in range(50):
                await ws.send(json.dumps(dict(json.loads(req), id=str(i))))
            got = set()
            for _ in range(50):
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                got.add(m.get("id"))
            tally.add("ws", "socket of 50 answered", got == {str(i) for i in range(50)},
                      "ids %r" % sorted(got))

    async def main():
        n = 0
        while not stop.is_set():
            try:
                await one(n)
            except Exception as e:  # noqa: BLE001 (counted, shown)
                tally.add("ws", "socket failed", False, repr(e))
                await asyncio.sleep(0.5)
            n += 1

    asyncio.run(main())


def reload_client(url, stop, tally):
    s = requests.Session()
    infer = url + "/v2/models/echo2/infer"
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                        "data": [1, 2, 3, 4]}]}
    next_flip = time.monotonic() + 20
    loaded = True
    while not stop.is_set():
        try:
            if time.monotonic() >= next_flip:
                act = "unload" if loaded else "load"
                r = s.post(url + "/v2/repository/models/echo2/" + act, timeout=30)
                tally.add("reload", act + " 200", r.status_code == 200, r.text)
                loaded = not loaded
                next_flip += 20
            r = s.post(infer, json=body, timeout=10)
            ok = r.status_code == 200 if loaded else r.status_code in (400, 404, 503)
            tally.add("reload", "infer %s %d" % ("loaded" if loaded else "unloaded",
                                                  r.status_code), ok, r.text)
            time.sleep(0.01)
        except requests.RequestException as e:
            tally.add("reload", "request failed", False, repr(e))
            time.sleep(0.5)


def redis_client(rsrv, stop, tally):
    import numpy as np
    r = rsrv.client()
    row = np.arange(4, dtype="<f4").tobytes()
    seq = 0
    while not stop.is_set():
        t0 = time.monotonic()
        pipe = r.pipeline(transaction=False)
        for cam in range(10):
            pipe.xadd("soak:%d" % cam, {"input": row, "camera": str(cam), "seq": str(seq)},
                      maxlen=2000, approximate=True)
        try:
            pipe.execute()
            tally.add("redis", "frames written", True)
        except Exception as e:  # noqa: BLE001
            tally.add("redis", "XADD failed", False, repr(e))
        seq += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/batchd")
    ap.add_argument("--demo", default="models-demo")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--no-redis", action="store_true")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="batchd-soak-")
    rsrv = None
    if not a.no_redis and shutil.which("redis-server"):
        from redis_util import RedisServer
        rsrv = RedisServer(os.path.join(work, "redis")).start()
    srv, url = start_server(a.bin, make_repo(a.demo, work, rsrv and rsrv.url), work,
                            rsrv and rsrv.url)
    secs = a.minutes * 60.0
    print("soak: %s, %.0f min, http %d req/s on digits, redis %s; server pid %d, %s"
          % (url, a.minutes, a.rate, "on" if rsrv else "off", srv.pid, a.bin), flush=True)

    stop = threading.Event()
    tally = Tally()
    clients = [threading.Thread(target=edge_client, args=(url, a.demo, stop, tally)),
               threading.Thread(target=ws_client, args=(url, stop, tally)),
               threading.Thread(target=reload_client, args=(url, stop, tally))]
    if rsrv:
        clients.append(threading.Thread(target=redis_client, args=(rsrv, stop, tally)))
    bench_json = os.path.join(work, "bench.json")
    bench = subprocess.Popen([a.bin, "bench", "--url", url, "--model", "digits", "--binary",
                              "--rate", str(a.rate), "--duration", "%ds" % int(secs),
                              "--warmup", "0s", "--quiet", "--json", bench_json],
                             stdout=subprocess.DEVNULL)
    for t in clients:
        t.start()

    t0 = time.monotonic()
    samples = []  # (seconds, rss MiB, fds, threads)
    next_print = 60.0
    while time.monotonic() - t0 < secs:
        time.sleep(5)
        el = time.monotonic() - t0
        if srv.poll() is not None:
            print("soak: the server exited with %s" % srv.returncode)
            break
        samples.append((el,) + proc_sample(srv.pid))
        if el >= next_print:
            _, rss, fds, th = samples[-1]
            print("  %5.1f min  RSS %7.1f MiB  fds %4d  threads %3d" % (el / 60, rss, fds, th),
                  flush=True)
            next_print += 60.0
    stop.set()
    for t in clients:
        t.join(60)
    try:
        bench.wait(max(30, secs))
    except subprocess.TimeoutExpired:
        bench.kill()
    if rsrv:
        frames = 10 * tally.counts.get(("redis", "frames written"), 0)
        acked = -1
        for _ in range(30):  # the last frames' results
            m = requests.get(url + "/metrics", timeout=10).text
            acked = sum(float(v) for v in re.findall(
                r'^batchd_redis_acked_total\{[^}]*\} (\S+)', m, re.M))
            if acked >= frames:
                break
            time.sleep(1)
        tally.add("redis", "every frame written acked (%d of %d)" % (acked, frames),
                  acked == frames)
    srv.send_signal(signal.SIGTERM)
    try:
        code = srv.wait(60)
    except subprocess.TimeoutExpired:
        srv.kill()
        code = "killed after 60 s"
    if rsrv:
        rsrv.stop()

    warm = [p for p in samples if p[0] >= secs / 5] or samples
    rss = [p[1] for p in samples]
    print("\nRSS: %.1f MiB once warm (%.1f min), %.1f at the end, %.1f at most; slope over the "
          "last four fifths %+.1f MiB/h" % (warm[0][1], warm[0][0] / 60, samples[-1][1],
                                            max(rss), slope_per_hour([p[:2] for p in warm])))
    print("fds: %d at the start, %d at the end; threads: %d, %d"
          % (samples[0][2], samples[-1][2], samples[0][3], samples[-1][3]))
    try:
        lv = json.load(open(bench_json))["levels"][0]
        lat = {k: (v if v is not None else float("nan")) for k, v in lv["latency_us"].items()}
        print("http (batchd bench): %d responses, %.0f/s, success rate %.4f, p50 %.2f ms, "
              "p99 %.2f ms" % (lv["responses"], lv["achieved_rps"], lv["success_rate"],
                               lat["p50"] / 1e3, lat["p99"] / 1e3))
        if lv["success_rate"] != 1:
            tally.add("http", "requests that failed", False, json.dumps(lv["errors"]))
    except (OSError, ValueError, KeyError, IndexError) as e:
        tally.add("http", "no result from batchd bench", False, repr(e))
    for (client, what), n in sorted(tally.counts.items()):
        print("  %-7s %-40s %9d" % (client, what, n))
    print("unexpected answers: %d" % tally.unexpected_n)
    for u in tally.unexpected:
        print("  " + u)
    print("server exit status after SIGTERM: %s" % code)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if tally.unexpected_n == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
