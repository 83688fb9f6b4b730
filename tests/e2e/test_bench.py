"""`batchd bench` end to end.

Against a tiny fake KServe v2 server (Python, one thread per connection) that answers the
model metadata and answers every infer after a known delay, the numbers the tool reports can
be checked exactly: latency percentiles against the delay, throughput against Little's law
(concurrency = throughput x latency), open-loop latency counted from the scheduled send time
(so a server that falls behind shows its queueing), and failures counted by kind (503s,
refused connections, timeouts). Then a run against the real batchd with a sim model, JSON and
binary tensors.
"""
import csv
import json
import os
import re
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import BATCHD_BIN

DELAY_S = 0.020

META = {"name": "fake", "versions": ["1"], "platform": "fake", "max_batch_size": 8,
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}]}


class _Listener(ThreadingHTTPServer):
    # listen() runs inside the constructor, so the backlog must be a class attribute: with
    # socketserver's default of 5, the SYNs of a burst of new connections overflow and are
    # retried a second later, which looks like a generator that fell behind.
    request_queue_size = 512
    daemon_threads = True

    def server_activate(self):
        """A listener that never blocks in accept(). serve_forever accepts once select() says
        a connection waits; on a Linux 6.18 VM it was found blocked in accept() with the queue
        empty after a run of tests, the next connection reset and the test's shutdown() waiting
        for good. socketserver takes the BlockingIOError as nothing to accept this time."""
        super().server_activate()
        self.socket.setblocking(False)

    def handle_error(self, request, client_address):
        """A client that left (the load generator stopping mid-reply) is not an error here;
        anything else is printed as socketserver would."""
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeServer:
    """delay: seconds before each infer reply; serial: one infer at a time (a server that
    cannot keep up); fail_every: every Nth infer answers 503; close: `Connection: close` on
    every infer reply (each request then needs a new connection); early=(secs, delay): the
    infers that arrive within `secs` of the first one wait `delay` instead (slow warm-up
    replies that end while the level measures)."""

    def __init__(self, delay=DELAY_S, serial=False, fail_every=0, close=False, early=None):
        self.delay = delay
        self.early = early
        self.first = None
        self.serial = serial
        self.fail_every = fail_every
        self.close = close
        self.lock = threading.Lock()
        self.count = 0
        self.bodies = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Head and body go out in two writes; with Nagle on, the body would wait for the
            # client's delayed ACK (40 ms) and every latency would be off by that.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def reply(self, status, body, close=False):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v2/models/fake":
                    self.reply(200, META)
                else:
                    self.reply(400, {"error": "unknown model"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.count += 1
                    n = outer.count
                    if len(outer.bodies) < 3:
                        outer.bodies.append((dict(self.headers), body))
                    now = time.monotonic()
                    outer.first = outer.first or now
                    delay = outer.delay
                    if outer.early and now - outer.first < outer.early[0]:
                        delay = outer.early[1]
                if outer.serial:
                    with outer.lock:
                        time.sleep(delay)
                else:
                    time.sleep(delay)
                if outer.fail_every and n % outer.fail_every == 0:
                    self.reply(503, {"error": "queue full"}, close=outer.close)
                else:
                    self.reply(200, {"model_name": "fake", "outputs": []}, close=outer.close)

        self.httpd = _Listener(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop_listening(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    servers = []

    def make(**kw):
        s = FakeServer(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        try:
            s.stop_listening()
        except OSError:
            pass


def bench(tmp_path, url, model, *args, timeout=60, check=True):
    """Run `batchd bench` and return (parsed JSON, completed process)."""
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    out = tmp_path / "bench.json"
    cmd = [BATCHD_BIN, "bench", "--url", url, "--model", model, "--json", str(out)] + \
        [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, "bench failed (%d):\n%s\n%s" % (p.returncode, p.stdout,
                                                                    p.stderr)
    data = json.loads(out.read_text()) if out.exists() else None
    return data, p


def timing_attempts(check, attempts=3):
    """Run `check` (a function that benches and asserts on timings) until it passes, at most
    `attempts` times. This machine is shared by several builds at once: a run during which
    another process took the cores shows it as latency. The arithmetic being tested (Little's
    law, latency from the schedule) holds on every quiet run; a real bug fails every time."""
    for i in range(attempts):
        try:
            return check()
        except AssertionError:
            if i == attempts - 1:
                raise
            time.sleep(1)


def total_errors(level):
    return sum(v for k, v in level["errors"].items() if not k.startswith("http_"))


def test_closed_loop_latency_and_littles_law(tmp_path, fake):
    srv = fake()
    timing_attempts(lambda: _closed_loop_check(tmp_path, srv))


def _closed_loop_check(tmp_path, srv):
    data, p = bench(tmp_path, srv.url, "fake", "--concurrency", 4, "--duration", "2s",
                    "--warmup", "0.3s")
    (lv,) = data["levels"]
    assert lv["mode"] == "closed" and lv["concurrency"] == 4
    lat = lv["latency_us"]
    # Every reply takes the 20 ms delay plus a little Python and socket time.
    # Never below the server's 20 ms; above it only by the Python server's own overhead.
    assert 20000 <= lat["p50"] <= 30000, lat
    assert 20000 <= lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] \
        <= lat["max"]
    # Little's law: 4 requests always outstanding, each taking the mean latency.
    mean_s = lat["mean"] / 1e6
    assert abs(lv["achieved_rps"] - 4 / mean_s) <= 0.10 * (4 / mean_s), lv
    assert 4 / 0.030 <= lv["achieved_rps"] <= 4 / 0.020 * 1.01, lv
    assert abs(lv["mean_in_flight"] - 4) <= 0.4, lv
    assert lv["success_rate"] == 1.0
    assert lv["status_counts"] == {"200": lv["responses"]}
    assert total_errors(lv) == 0
    assert lv["generator_fell_behind"] is False
    assert abs(lv["measured_s"] - 2.0) < 1e-6
    # Every measured request's reply is counted; the rate, every reply that ended inside the
    # 2 s (warm-up ones in, the last measured ones out: at most the 4 outstanding either way).
    assert abs(lv["responses"] - lv["achieved_rps"] * 2.0) <= 4
    assert len(lv["window_rps"]) == 5
    # The JSON echoes the configuration; one progress line per level; a table on stdout.
    cfg = data["config"]
    assert cfg["url"] == srv.url and cfg["model"] == "fake" and cfg["concurrency"] == [4]
    assert cfg["duration_s"] == 2 and cfg["warmup_s"] == 0.3 and cfg["binary"] is False
    assert cfg["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4]}]
    assert p.stderr.count("bench: concurrency=") == 1
    assert p.stdout.splitlines()[0].split()[0] == "concurrency"
    # What the fake server got: a JSON infer request built from the metadata.
    _, body = srv.bodies[0]
    assert json.loads(body) == {"inputs": [{"name": "INPUT0", "datatype": "FP32",
                                            "shape": [1, 4], "data": [0, 0, 0, 0]}]}


def test_open_loop_offered_rate_and_latency(tmp_path, fake):
    srv = fake()
    timing_attempts(lambda: _open_loop_check(tmp_path, srv))


def _open_loop_check(tmp_path, srv):
    # --max-send-lag 50ms: on this shared VM the generator's p99 send lag sometimes passes the
    # 10 ms default for reasons that are not the tool's; the flag's true case has its own test.
    data, _ = bench(tmp_path, srv.url, "fake", "--rate", 50, "--duration", "2s",
                    "--warmup", "0.2s", "--max-send-lag", "50ms")
    (lv,) = data["levels"]
    assert lv["mode"] == "open" and lv["rate"] == 50
    # A constant schedule: exactly 100 sends in 2 s.
    assert lv["requests_scheduled"] == 100
    assert lv["offered_rps"] == 50
    assert abs(lv["achieved_rps"] - 50) <= 2.5, lv
    assert lv["responses"] == 100 and lv["success_rate"] == 1.0
    # Never below the server's 20 ms; above it only by the Python server's own overhead.
    assert 20000 <= lv["latency_us"]["p50"] <= 30000, lv["latency_us"]
    assert lv["generator_fell_behind"] is False
    assert lv["send_lag_us"]["p99"] < 50000
    # Little's law, as the identity it is: requests in flight = achieved rate x mean latency
    # (at 50/s x ~21 ms, about one).
    little = lv["achieved_rps"] * lv["latency_us"]["mean"] / 1e6
    assert abs(lv["mean_in_flight"] - little) <= 0.1 * little, (lv["mean_in_flight"], little)
    assert 0.9 <= lv["mean_in_flight"] <= 1.6, lv


def test_open_loop_counts_latency_from_the_schedule(tmp_path, fake):
    # A server that does one request at a time (50/s at most) offered 100/s: its queue grows
    # by 50 requests per second, and so must the reported latency, although each request
    # is served in 20 ms once it is taken. A closed-loop tool would report ~20 ms.
    srv = fake(serial=True)
    timing_attempts(lambda: _schedule_check(tmp_path, srv))


def _schedule_check(tmp_path, srv):
    data, _ = bench(tmp_path, srv.url, "fake", "--rate", 100, "--duration", "1s",
                    "--warmup", "0", "--timeout", "5s", "--max-send-lag", "50ms")
    (lv,) = data["levels"]
    assert lv["requests_scheduled"] == 100
    assert lv["achieved_rps"] <= 55, lv
    assert lv["latency_us"]["p50"] > 300000, lv["latency_us"]
    assert lv["latency_us"]["max"] > 800000, lv["latency_us"]
    assert lv["generator_fell_behind"] is False  # the server fell behind, not the generator


def test_open_loop_flags_a_generator_that_cannot_send(tmp_path, fake):
    # One connection for 100 requests/s against 20 ms replies: the generator cannot send on
    # schedule (at most 50/s on one connection) and must say so.
    srv = fake()
    data, p = bench(tmp_path, srv.url, "fake", "--rate", 100, "--duration", "1s",
                    "--warmup", "0", "--max-connections", 1)
    (lv,) = data["levels"]
    assert lv["generator_fell_behind"] is True
    # Each request that waited is counted once (the count once grew by one per loop turn).
    waited = int(re.search(r"(\d+) requests waited for a connection, all 1 being busy",
                           lv["behind_reason"]).group(1))
    assert 0 < waited <= lv["requests_scheduled"], lv["behind_reason"]
    assert lv["send_lag_us"]["p99"] > 100000
    assert "GENERATOR-FELL-BEHIND" in p.stderr


def test_rates_are_not_short_by_a_latency_of_replies(tmp_path, fake):
    """Closed loop, 4 connections, every reply 0.5 s: 8 replies/s. Measuring from 1.25 s to
    3.25 s, the replies at 1.5, 2.0, 2.5 and 3.0 s are inside, 16 in all; the first 4 answer
    warm-up requests. Counting only the measured requests' replies read 6/s (a latency's worth
    short: 14.4/s for 16/s at 1 s latency over 10 s)."""
    srv = fake(delay=0.5)
    data, _ = bench(tmp_path, srv.url, "fake", "--concurrency", 4, "--duration", "2s",
                    "--warmup", "1.25s", "--window", "0.5s")
    (lv,) = data["levels"]
    assert lv["achieved_rps"] == pytest.approx(8, abs=0.6), lv
    assert lv["window_rps"] == [pytest.approx(8, abs=0.6)] * 4, lv


def test_warm_up_replies_that_end_while_measuring_are_in_the_rates(tmp_path, fake):
    """Open loop, 50/s: the warm-up's 10 requests are answered 0.3 s late, inside the measured
    second, so that second has 60 replies: achieved reads 60/s, above the rate offered (the
    README says to lengthen --warmup then). The 50 measured requests are the ones counted with
    their latency and status."""
    srv = fake(delay=0.005, early=(0.2, 0.3))
    data, _ = bench(tmp_path, srv.url, "fake", "--rate", 50, "--duration", "1s",
                    "--warmup", "0.2s", "--max-send-lag", "50ms")
    (lv,) = data["levels"]
    assert lv["responses"] == 50 and lv["status_counts"] == {"200": 50}, lv
    assert lv["achieved_rps"] == pytest.approx(60, abs=1.5), lv
    assert lv["goodput_rps"] == lv["achieved_rps"], lv


def test_open_loop_request_count_offers_the_rate(tmp_path, fake):
    """--rate 50 --requests 20: the level's time is the 20 intervals of the schedule, so the
    offered rate is the rate (it was 52.6/s: 20 requests over 19 intervals)."""
    srv = fake(delay=0.002)
    data, _ = bench(tmp_path, srv.url, "fake", "--rate", 50, "--requests", 20, "--warmup", "0",
                    "--max-send-lag", "50ms")
    (lv,) = data["levels"]
    assert lv["requests_scheduled"] == lv["responses"] == 20, lv
    assert lv["offered_rps"] == pytest.approx(50, rel=1e-3), lv
    assert lv["measured_s"] == pytest.approx(0.4, rel=1e-3), lv


@pytest.mark.parametrize("n", [5, 40])
def test_bursty_request_count_offers_the_rate(tmp_path, fake, n):
    """--rate 50 --distribution bursty --requests N: bursts of 16 go out at one time each, so
    the N take N / 50 s, as the mean rate has them. The level used to end when the N+1th would
    go out, in the same burst: 5 requests measured 0 s and none was sent ('generator fell
    behind', exit 1); 40 offered 62.5/s."""
    srv = fake(delay=0.002)
    data, p = bench(tmp_path, srv.url, "fake", "--rate", 50, "--distribution", "bursty",
                    "--requests", n, "--warmup", "0.1s", "--max-send-lag", "50ms")
    (lv,) = data["levels"]
    assert lv["requests_scheduled"] == lv["requests_sent"] == lv["responses"] == n, lv
    assert lv["generator_fell_behind"] is False, lv
    assert lv["measured_s"] == pytest.approx(n / 50, rel=1e-3), lv
    assert lv["offered_rps"] == pytest.approx(50, rel=1e-3), lv
    assert lv["success_rate"] == 1.0


def test_request_count_rates_leave_out_what_ended_before_the_first_of_the_n(tmp_path, fake):
    """--rate 10 bursty (bursts of 16 every 1.6 s) --requests 16 --warmup 1.7s: the warm-up's
    burst (1.6 s) is answered at 1.8 s, after the warm-up but before the first of the N (3.2 s),
    where the level's time starts; it read achieved 20/s for 10 offered."""
    srv = fake(delay=0.2)
    data, _ = bench(tmp_path, srv.url, "fake", "--rate", 10, "--distribution", "bursty",
                    "--requests", 16, "--warmup", "1.7s", "--max-send-lag", "50ms")
    (lv,) = data["levels"]
    assert lv["responses"] == 16 and lv["measured_s"] == pytest.approx(1.6, rel=1e-3), lv
    assert lv["offered_rps"] == pytest.approx(10, rel=1e-3), lv
    assert lv["achieved_rps"] == pytest.approx(10, rel=1e-3), lv


def test_503_counted_by_status_and_kind(tmp_path, fake):
    srv = fake(delay=0.002, fail_every=2)
    data, _ = bench(tmp_path, srv.url, "fake", "--concurrency", 2, "--requests", 200,
                    "--warmup", "0")
    (lv,) = data["levels"]
    sc = lv["status_counts"]
    assert set(sc) == {"200", "503"}
    assert sc["200"] + sc["503"] == lv["responses"] == lv["requests_sent"] == 200
    assert abs(sc["200"] - sc["503"]) <= 2
    assert lv["errors"]["http_503"] == sc["503"]
    assert lv["errors"]["http_429"] == 0 and total_errors(lv) == 0
    assert abs(lv["success_rate"] - sc["200"] / lv["responses"]) < 1e-5  # printed with %.6g
    assert 0.45 <= lv["success_rate"] <= 0.55


def bench_while_it_stops(tmp_path, srv, after_s, *args):
    """Bench `srv` (closing each connection after its reply) and stop it listening `after_s`
    into the run; the JSON's levels and the process."""
    timer = threading.Timer(after_s, srv.stop_listening)
    timer.start()
    try:
        data, p = bench(tmp_path, srv.url, "fake", *args, "--warmup", "0", check=False)
    finally:
        timer.join()
    return data["levels"], p


def test_refused_connections_counted(tmp_path, fake):
    """The server stops listening 0.6 s into a 1.2 s level: the refused connects are counted,
    and since the level ended with every connect refused, the run fails (exit 1)."""
    srv = fake(delay=0.002, close=True)
    (lv,), p = bench_while_it_stops(tmp_path, srv, 0.6, "--concurrency", 2, "--duration",
                                    "1.2s")
    assert lv["responses"] > 20, lv
    assert lv["errors"]["refused"] > 20, lv
    assert lv["errors"]["timeout"] == 0
    assert 0 < lv["success_rate"] < 1
    assert lv["server_gone"] is True and 0.55 <= lv["server_gone_at_s"] <= 1.0, lv
    assert p.returncode == 1, p.stderr
    assert re.search(r"batchd bench: the server refused every connection from 0\.[5-9] s into "
                     r"concurrency 2 on \(it stopped, or closed its port\); exiting 1\n",
                     p.stderr), p.stderr


def test_a_level_whose_server_went_away_is_not_stable(tmp_path, fake):
    """The server stops listening 0.2 s into a 1.5 s level: its last windows have no reply
    at all, which is no settled measurement (three windows of 0/s were 'stable')."""
    srv = fake(delay=0.002, close=True)
    (lv,), p = bench_while_it_stops(tmp_path, srv, 0.2, "--concurrency", 1, "--duration",
                                    "1.5s")
    assert lv["responses"] > 0, lv
    assert lv["window_rps"][-3:] == [0, 0, 0], lv
    assert lv["stable"] is False, lv
    assert lv["server_gone"] is True and p.returncode == 1, (lv, p.stderr)


@pytest.mark.parametrize("loop", [["--concurrency", "4,8"], ["--rate", "500,1000"]])
def test_a_server_that_stops_listening_ends_the_run_within_a_second(tmp_path, fake, loop):
    """Every connect refused for 1 s ends the level: before, --requests N went on until N
    refused tries (100 a second per connection in the closed loop) and exited 0 since some
    replies had come. The levels after it are skipped; the report holds the level run."""
    srv = fake(delay=0.002, close=True)
    t0 = time.monotonic()
    levels, p = bench_while_it_stops(tmp_path, srv, 0.5, *loop, "--requests", 1000000,
                                     "--csv", tmp_path / "g.csv")
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stderr
    (lv,) = levels
    assert lv["server_gone"] is True, lv
    assert 0.4 <= lv["server_gone_at_s"] <= 0.9, lv
    assert lv["responses"] > 0 and lv["errors"]["refused"] > 0, lv
    assert took < 5, took  # about 1.5 s: the stop at 0.5 s, then a second of refusals
    assert "the levels after it are skipped; exiting 1\n" in p.stderr, p.stderr
    assert "SERVER-GONE (every connect refused from 0." in p.stderr, p.stderr
    assert "server gone" in p.stdout.splitlines()[1], p.stdout
    (row,) = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert row["server_gone"] == "true", row


def test_a_level_without_replies_has_no_latency(tmp_path):
    """A server that answers the metadata and then drops every connection unanswered: no
    latency exists, so the JSON says null, the CSV leaves the fields empty, the table and the
    progress line say "-", the SVG has no latency point, and the drops are in "other"."""
    import socket
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    port = lst.getsockname()[1]
    stop = threading.Event()

    def serve():
        first = True
        while not stop.is_set():
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            if first:
                conn.recv(65536)
                meta = json.dumps(META).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(meta)
                             + meta)
                first = False
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        data, p = bench(tmp_path, "http://127.0.0.1:%d" % port, "fake", "--concurrency", 2,
                        "--duration", "0.5s", "--warmup", "0", "--csv", tmp_path / "n.csv",
                        "--plot", tmp_path / "n.svg", check=False)
    finally:
        stop.set()
        lst.close()
    # No request succeeded: the report is written, and the exit code says so.
    assert p.returncode == 1, p.stderr
    assert "batchd bench: no request succeeded at concurrency 2; exiting 1\n" in p.stderr
    (lv,) = data["levels"]
    assert lv["responses"] == 0 and total_errors(lv) > 0, lv
    assert all(v is None for v in lv["latency_us"].values()), lv["latency_us"]
    assert lv["mean_in_flight"] is None
    (row,) = list(csv.DictReader((tmp_path / "n.csv").open()))
    assert row["p50_us"] == row["max_us"] == row["mean_in_flight"] == "", row
    cells = p.stdout.splitlines()[1].split()
    assert cells[3:8] == ["-"] * 5, p.stdout
    assert int(cells[12]) == total_errors(lv), p.stdout  # "other"
    assert "p50=-ms p99=-ms max=-ms" in p.stderr, p.stderr
    svg = ET.parse(tmp_path / "n.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(".//%scircle" % ns)) == 1  # the throughput point only


def test_timeouts_counted(tmp_path, fake):
    srv = fake(delay=0.5)
    data, p = bench(tmp_path, srv.url, "fake", "--concurrency", 2, "--duration", "0.6s",
                    "--warmup", "0", "--timeout", "100ms", check=False)
    assert p.returncode == 1, p.stderr
    (lv,) = data["levels"]
    assert lv["responses"] == 0
    assert lv["errors"]["timeout"] >= 8, lv  # 2 slots x one per 100 ms for 0.6 s
    assert lv["success_rate"] == 0


def test_closed_loop_waits_for_replies_slower_than_the_level(tmp_path, fake):
    """Replies that end after the measured time are waited for (up to --timeout) and counted,
    with their latency: a healthy server slower than the level is not 'no request succeeded'.
    None ended inside the measured second, so the achieved rate is 0."""
    srv = fake(delay=1.2)
    data, p = bench(tmp_path, srv.url, "fake", "--concurrency", 2, "--duration", "1s",
                    "--warmup", "0")
    (lv,) = data["levels"]
    assert (lv["requests_sent"], lv["responses"], lv["success_rate"]) == (2, 2, 1), lv
    assert lv["status_counts"] == {"200": 2} and total_errors(lv) == 0, lv
    assert lv["achieved_rps"] == 0, lv
    assert 1200000 <= lv["latency_us"]["p50"] < 3000000, lv


def test_running_out_of_descriptors_is_the_generators_fault(tmp_path, fake):
    """More connections than bench may open (a hard limit it cannot raise): the sockets it
    could not make are counted as connect errors and the level says the generator is why."""
    import resource
    srv = fake(delay=0.01)
    out = tmp_path / "bench.json"
    p = subprocess.run([BATCHD_BIN, "bench", "--url", srv.url, "--model", "fake", "--json",
                        str(out), "--concurrency", "100", "--duration", "0.5s", "--warmup", "0"],
                       capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48)))
    (lv,) = json.loads(out.read_text())["levels"]
    assert lv["generator_fell_behind"] is True, (lv, p.stderr)
    assert "bench ran out of file descriptors" in lv["behind_reason"], lv
    assert "(limit 48; connect errors count them)" in lv["behind_reason"], lv
    assert lv["errors"]["connect"] > 0 and lv["responses"] > 0, lv


def test_unknown_model_is_a_clear_error(tmp_path, fake):
    srv = fake()
    data, p = bench(tmp_path, srv.url, "nope", "--concurrency", 1, check=False)
    assert p.returncode == 1
    assert "cannot read model 'nope' metadata: GET /v2/models/nope answered 400" in p.stderr
    assert data is None


def test_bad_flags(tmp_path, fake):
    srv = fake()
    for levels in ("1,x", "1,"):
        _, p = bench(tmp_path, srv.url, "fake", "--concurrency", levels, check=False)
        assert p.returncode == 2
        assert ("--concurrency must be a comma list of up to 256 integers above 0, got '%s'"
                % levels) in p.stderr
    # Past the engine's bounds: refused with the flags (exit 2), before the metadata.
    for flag, value, want in (("--concurrency", "1,100001", "--concurrency takes values up to "
                               "100000 (requests kept outstanding), got 100001"),
                              ("--rate", "1e9", "--rate takes values up to 1e7 (requests/s), "
                               "got 1e+09")):
        _, p = bench(tmp_path, "http://127.0.0.1:1", "fake", flag, value, check=False)
        assert (p.returncode, p.stderr) == (2, "batchd bench: %s\n" % want)
    _, p = bench(tmp_path, srv.url, "fake", "--duration", "soon", check=False)
    assert p.returncode == 2
    assert "--duration must be a duration like 10s, 500ms or 2m" in p.stderr
    # Refused before anything is sent: no duration, and an output file that cannot be written.
    _, p = bench(tmp_path, srv.url, "fake", "--duration", "0s", check=False)
    assert p.returncode == 2
    assert p.stderr == ("batchd bench: --duration must be a duration like 10s, 500ms or 2m from "
                        "0.001s to 86400s, got '0s'\n")
    _, p = bench(tmp_path, srv.url, "fake", "--timeout", "0", check=False)
    assert p.returncode == 2
    assert p.stderr == ("batchd bench: --timeout must be a duration like 10s, 500ms or 2m from "
                        "0.001s to 3600s, got '0'\n")
    _, p = bench(tmp_path, srv.url, "fake", "--concurrency", "--requests", "5", check=False)
    assert p.returncode == 2
    assert p.stderr == "batchd bench: --concurrency needs a value\n"
    # A flag that would change nothing is refused, not ignored (they were).
    for args, flag in ((["--distribution", "poisson"], "--distribution"),
                       (["--concurrency", "2", "--burst=4"], "--burst"),
                       (["--max-connections", "8"], "--max-connections"),
                       (["--max-send-lag", "1ms"], "--max-send-lag")):
        _, p = bench(tmp_path, "http://127.0.0.1:1", "fake", *args, check=False)
        assert (p.returncode, p.stderr) == (2, "batchd bench: %s applies to the open loop "
                                            "(--rate); the closed loop (--concurrency) has no "
                                            "use for it\n" % flag)
    # A --duration shorter than one interval of the schedule would measure nothing (it read
    # as a server that answered nothing, exit 1).
    for args, want in ((["--rate", "0.5", "--duration", "1s"], "--rate 0.5 sends a request every "
                        "2s, so --duration 1s would measure none: give a --duration of at least "
                        "2s, or --requests"),
                       (["--rate", "4,2", "--distribution", "bursty", "--duration", "3s"],
                        "--rate 4 sends a burst every 4s, so --duration 3s would measure none: "
                        "give a --duration of at least 4s, or --requests")):
        _, p = bench(tmp_path, "http://127.0.0.1:1", "fake", *args, check=False)
        assert (p.returncode, p.stderr) == (2, "batchd bench: %s\n" % want)
    for args, want in ((["--requests", "5", "--duration", "1s"],
                        "give --duration or --requests, not both"),
                       (["--max-duration", "1s", "--duration", "2s"],
                        "--max-duration (1s) is shorter than --duration (2s)")):
        _, p = bench(tmp_path, "http://127.0.0.1:1", "fake", *args, check=False)
        assert (p.returncode, p.stderr) == (2, "batchd bench: %s\n" % want)
    _, p = bench(tmp_path, "http://127.0.0.1:1", "fake", "--rate", "5", "--burst", "4",
                 check=False)
    assert (p.returncode, p.stderr) == (2, "batchd bench: --burst applies to --distribution "
                                        "bursty\n")
    for flag in ("--json", "--csv", "--plot"):
        p = subprocess.run([BATCHD_BIN, "bench", "--url", srv.url, "--model", "fake",
                            "--duration", "1s", flag, str(tmp_path / "no" / "out")],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, flag
        assert p.stderr == "batchd bench: cannot write %s: No such file or directory\n" % (
            tmp_path / "no" / "out")
        p = subprocess.run([BATCHD_BIN, "bench", "--url", srv.url, "--model", "fake",
                            "--duration", "1s", flag, str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and p.stderr == (
            "batchd bench: cannot write %s: Is a directory\n" % tmp_path), flag
        # An empty name was only found when the run had ended (exit 1).
        p = subprocess.run([BATCHD_BIN, "bench", "--url", "http://127.0.0.1:1", "--model",
                            "fake", flag, ""], capture_output=True, text=True, timeout=30)
        assert (p.returncode, p.stderr) == (2, "batchd bench: %s needs a file name, got ''\n"
                                            % flag)
    # Two reports on one file: the second overwrote the first, exit 0. Also through a link, or
    # a path spelt differently, whether the file is there yet or not.
    (tmp_path / "there.json").write_text("")
    os.symlink(str(tmp_path / "there.json"), str(tmp_path / "link.csv"))
    os.symlink("later.json", str(tmp_path / "dangling.csv"))  # to a file not there yet
    for args in ((["--json", tmp_path / "r.out", "--csv", tmp_path / "r.out"]),
                 (["--csv", tmp_path / "a.out", "--plot", "%s/./a.out" % tmp_path]),
                 (["--json", tmp_path / "there.json", "--plot", tmp_path / "link.csv"]),
                 (["--json", tmp_path / "later.json", "--csv", tmp_path / "dangling.csv"])):
        p = subprocess.run([BATCHD_BIN, "bench", "--url", "http://127.0.0.1:1", "--model",
                            "fake"] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=30)
        assert (p.returncode, p.stderr) == (2, "batchd bench: %s and %s name the same file '%s'; "
                                            "give each report a file of its own\n"
                                            % (args[0], args[2], args[3])), p.stderr
    assert not (tmp_path / "r.out").exists() and not (tmp_path / "a.out").exists()
    # A device is no report to lose: /dev/null twice is taken (here the server is not there).
    p = subprocess.run([BATCHD_BIN, "bench", "--url", "http://127.0.0.1:1", "--model", "fake",
                        "--json", "/dev/null", "--csv", "/dev/null"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot read model 'fake' metadata" in p.stderr, p.stderr
    # A count of 0 meant "the default" (10 s, exit 0).
    _, p = bench(tmp_path, "http://127.0.0.1:1", "fake", "--requests", "0", check=False)
    assert (p.returncode, p.stderr) == (2, "batchd bench: --requests must be an integer from 1 "
                                        "to 1000000000000, got '0'\n"), p.stderr
    # Open loop by --requests: N / rate past a level's longest time would never end (or, past
    # the clock's range, measured nothing and blamed the generator).
    for rate, requests, want in (("1e-9", 1, "--rate 1e-09 with --requests 1 takes 1e+09s"),
                                 ("1e-300", 1, "--rate 1e-300 with --requests 1 takes 1e+300s"),
                                 ("5,1", 100000, "--rate 1 with --requests 100000 takes "
                                  "100000s")):
        _, p = bench(tmp_path, "http://127.0.0.1:1", "fake", "--rate", rate, "--requests",
                     requests, check=False)
        assert (p.returncode, p.stderr) == (2, "batchd bench: %s to send, past the 86400s a "
                                            "level may last (--duration's limit): raise --rate "
                                            "or lower --requests\n" % want), p.stderr
    # --data-file must name an input the model has, once; --cacert must hold a certificate.
    (tmp_path / "v.bin").write_bytes(b"\0" * 16)
    (tmp_path / "notpem.txt").write_text("not a certificate\n")
    for args, want in (
            (["--data-file", "NOPE=%s" % (tmp_path / "v.bin")],
             "batchd bench: --data-file names input 'NOPE', which model 'fake' does not have\n"),
            (["--data-file", str(tmp_path / "v.bin"), "--data-file",
              "INPUT0=%s" % (tmp_path / "v.bin")],
             "batchd bench: --data-file gives input 'INPUT0' twice; give each input once\n"),
            (["--cacert", str(tmp_path / "notpem.txt")],
             "batchd bench: no CA certificate could be read from %s: " % (tmp_path / "notpem.txt"))):
        _, p = bench(tmp_path, srv.url, "fake", "--requests", 5, *args, check=False)
        assert p.returncode == 2 and p.stderr.startswith(want), (args, p.stderr)


@pytest.fixture(scope="module")
def batchd(start_server):
    repo = start_server.repo()
    repo.add_sim("sim16", [("INPUT0", "FP32", [16])], max_batch_size=8, latency_us=500)
    repo.add_sim("varlen", [("INPUT0", "INT32", [-1])], max_batch_size=8, latency_us=200)
    return start_server(repo)


@pytest.mark.parametrize("binary", [False, True])
def test_real_batchd_sim_model(tmp_path, batchd, binary):
    extra = ["--binary"] if binary else []
    csv_path = tmp_path / "out.csv"
    svg_path = tmp_path / "out.svg"
    data, _ = bench(tmp_path, batchd.base, "sim16", "--concurrency", "1,4", "--duration",
                    "0.5s", "--warmup", "0.1s", "--batch", 2, "--data", "random", "--csv", csv_path,
                    "--plot", svg_path, *extra)
    assert data["config"]["binary"] is binary
    assert data["config"]["inputs"][0]["shape"] == [2, 16]
    assert [lv["concurrency"] for lv in data["levels"]] == [1, 4]
    for lv in data["levels"]:
        assert lv["success_rate"] == 1.0, lv
        assert lv["status_counts"] == {"200": lv["responses"]}
        assert lv["responses"] > 25
        assert lv["latency_us"]["p50"] >= 500  # the sim model's own latency
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("mode,concurrency,rate,offered_rps,achieved_rps")
    assert len(rows) == 3 and rows[1].startswith("closed,1,,") and rows[2].startswith("closed,4,,")
    # No send lag in a closed loop: an empty field, as the JSON's null (it was 0).
    assert [r["send_lag_p99_us"] for r in csv.DictReader(csv_path.open())] == ["", ""]
    assert [lv["send_lag_us"] for lv in data["levels"]] == [None, None]
    svg = ET.parse(str(svg_path)).getroot()
    assert svg.tag.endswith("svg")
    assert len([e for e in svg.iter() if e.tag.endswith("circle")]) == 6
    # The server counted exactly what the tool sent and got back, 2 rows each.
    assert batchd.metric("batchd_inference_requests_total", model="sim16", version="1",
                         outcome="success") >= sum(lv["responses"] for lv in data["levels"])


def test_closed_loop_request_count_is_exact(tmp_path, batchd):
    """--requests N at concurrency 8 without a warm-up: exactly N measured, and exactly N
    reach the server (no request per connection before measuring, no tail of the in-flight
    ones counted)."""
    def served():
        return batchd.metric("batchd_inference_requests_total", model="sim16", version="1",
                             outcome="success") or 0
    for conc in (1, 8):
        before = served()
        data, _ = bench(tmp_path, batchd.base, "sim16", "--concurrency", conc, "--requests", 50,
                        "--warmup", "0")
        (lv,) = data["levels"]
        assert lv["requests_sent"] == lv["responses"] == 50, lv
        assert served() - before == 50


def test_request_count_after_a_warm_up_is_not_inflated(tmp_path, fake):
    """--requests N after a warm-up: the warm-up requests still in flight when measuring
    begins end inside it; their replies are not the N's, so the rates and Little's law come
    from the N alone. A server that answers one request per 20 ms cannot give more than
    50/s, and 5 connections cannot hold more than 5 requests."""
    srv = fake(serial=True)
    data, _ = bench(tmp_path, srv.url, "fake", "--concurrency", 5, "--requests", 20,
                    "--warmup", "0.3s")
    (lv,) = data["levels"]
    assert lv["requests_sent"] == lv["responses"] == 20, lv
    assert lv["achieved_rps"] == pytest.approx(lv["offered_rps"], rel=1e-3), lv
    assert lv["achieved_rps"] <= 1 / DELAY_S * 1.02, lv
    assert lv["mean_in_flight"] <= 5 * 1.01, lv
    assert lv["achieved_rps"] == pytest.approx(20 / lv["measured_s"], rel=1e-3), lv


def test_duration_shorter_than_the_window_measures_the_duration(tmp_path, fake):
    srv = fake()
    data, _ = bench(tmp_path, srv.url, "fake", "--concurrency", 2, "--duration", "300ms",
                    "--window", "1s", "--warmup", "0")
    (lv,) = data["levels"]
    assert abs(lv["measured_s"] - 0.3) < 1e-6, lv
    assert len(lv["window_rps"]) == 1, lv
    assert data["config"]["window_s"] == 0.3  # the window that ran, not the one asked for
    data, _ = bench(tmp_path, srv.url, "fake", "--concurrency", 2, "--duration", "200ms",
                    "--window", "1ms", "--warmup", "0")
    assert data["config"]["window_s"] == 0.01  # at least 10 ms
    assert len(data["levels"][0]["window_rps"]) == 20


def test_a_long_level_prints_progress_while_it_measures(tmp_path, fake):
    """Every 5 s of a level's measurement: one line on stderr saying how it goes."""
    srv = fake()
    _, p = bench(tmp_path, srv.url, "fake", "--concurrency", 2, "--duration", "5.6s",
                 "--window", "5.6s", "--warmup", "0")
    lines = p.stderr.splitlines()
    running = [ln for ln in lines if " measuring " in ln]
    assert len(running) == 1, p.stderr
    assert re.fullmatch(r"bench: concurrency=2 measuring \d+s: \d+ replies, [\d.]+/s, errors=0",
                        running[0]), running
    assert lines.index(running[0]) < len(lines) - 1  # before the level's own line
    _, p = bench(tmp_path, srv.url, "fake", "--concurrency", 2, "--duration", "5.6s",
                 "--window", "5.6s", "--warmup", "0", "--quiet")
    assert p.stderr == ""


def test_on_a_terminal_the_progress_line_is_rewritten_every_second(tmp_path, fake):
    import pty
    srv = fake()
    master, slave = pty.openpty()
    try:
        p = subprocess.run([BATCHD_BIN, "bench", "--url", srv.url, "--model", "fake",
                            "--concurrency", "2", "--duration", "2.5s", "--window", "2.5s",
                            "--warmup", "0"], stdout=subprocess.PIPE, stderr=slave,
                           timeout=60)
        os.close(slave)
        slave = None
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed and read out
                break
            if not chunk:
                break
            err += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert p.returncode == 0
    text = err.decode()
    assert re.search(r"\rbench: concurrency=2 measuring 1s: \d+ replies, [\d.]+/s, "
                     r"errors=0\x1b\[K", text), repr(text)
    assert re.search(r"measuring 2s: ", text), repr(text)
    # Cleared before the level's own line, which is a line of its own.
    assert "\r\x1b[Kbench: concurrency=2 offered=" in text, repr(text)


def test_ctrl_c_reports_the_levels_measured(tmp_path, fake):
    """SIGINT during the second level: the first is reported whole, the second as far as it
    got and flagged, the third never runs; the files are written and the exit code is 130."""
    srv = fake()
    out = tmp_path / "int.json"
    csv_out = tmp_path / "int.csv"
    p = subprocess.Popen([BATCHD_BIN, "bench", "--url", srv.url, "--model", "fake",
                          "--concurrency", "2,4,8", "--duration", "2s", "--warmup", "0",
                          "--json", str(out), "--csv", str(csv_out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:  # the first level's own line: the second level has begun
        seen.append(line)
        if line.startswith("bench: concurrency=2 offered="):
            break
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    stdout, rest = p.communicate(timeout=30)
    stderr = "".join(seen) + rest
    assert p.returncode == 130, stderr
    data = json.loads(out.read_text())
    levels = data["levels"]
    assert [lv["concurrency"] for lv in levels] == [2, 4], levels
    assert data["config"]["concurrency"] == [2, 4, 8]  # what was asked for
    assert levels[0]["interrupted"] is False and levels[0]["measured_s"] == 2
    assert levels[1]["interrupted"] is True and 0 < levels[1]["measured_s"] < 2, levels[1]
    assert levels[1]["responses"] > 0
    assert "interrupted" in stdout.splitlines()[2], stdout
    assert stderr.endswith("batchd bench: interrupted; the report covers the 2 levels "
                           "measured\n"), stderr
    rows = list(csv.DictReader(csv_out.open()))
    assert [r["interrupted"] for r in rows] == ["false", "true"]


def test_real_batchd_variable_dims_need_shape(tmp_path, batchd):
    _, p = bench(tmp_path, batchd.base, "varlen", "--requests", 10, check=False)
    assert p.returncode == 2
    assert "input 'INPUT0' has variable dims [-1] (batch dim excluded); give them with " \
           "--shape INPUT0:D1,D2,..." in p.stderr
    data, _ = bench(tmp_path, batchd.base, "varlen", "--requests", 50, "--warmup", "0",
                    "--shape", "INPUT0:5", "--rate", 200)
    (lv,) = data["levels"]
    assert lv["requests_scheduled"] == 50 and lv["responses"] == 50
    assert lv["success_rate"] == 1.0
    assert data["config"]["inputs"][0]["shape"] == [1, 5]
