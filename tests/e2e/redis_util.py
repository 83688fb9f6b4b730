"""Helpers for the Redis Streams ingest tests: a private redis-server on a free loopback port
(no fixed port, no system service), a pipelined frame producer and a result checker. Used by
test_redis.py and bench/redis_bench.py."""
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
TEST_CLIENT = "batchd-test"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1:<free port> (or another loopback address, `host`; and on a unix
    socket too, `unixsocket`) in its own folder, no automatic persistence (`--save '' --appendonly no`); restart() saves on
    shutdown (SHUTDOWN SAVE) and starts a new process on the same port and folder, which loads
    that snapshot."""

    def __init__(self, workdir, port=None, password=None, host="127.0.0.1", unixsocket=None):
        import redis  # python3-redis
        self._redis = redis
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.host = host
        self.port = port or free_port()
        self.password = password  # --requirepass
        self.unixsocket = unixsocket  # --unixsocket, besides the port
        self.extra = []  # more redis-server arguments, for the next start
        self.proc = None

    @property
    def url(self):
        return "redis://%s:%d" % (self.host, self.port)

    def client(self, **kw):
        kw.setdefault("password", self.password)
        kw.setdefault("client_name", TEST_CLIENT)  # tells the tests' connections from batchd's
        return self._redis.Redis(host=self.host, port=self.port, socket_timeout=30, **kw)

    def start(self, timeout=10.0):
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host, "--save", "",
               "--appendonly", "no", "--dir", self.dir, "--logfile", "redis.log",
               "--daemonize", "no", "--protected-mode", "no"]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.unixsocket:
            cmd += ["--unixsocket", self.unixsocket, "--unixsocketperm", "700"]
        cmd += self.extra
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start on port %d (see %s/redis.log)"
                           % (self.port, self.dir))

    def stop(self, save=False):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.client().shutdown(save=save, nosave=not save)
        except Exception:
            pass  # the connection drops as it shuts down
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, down_s=1.0):
        self.stop(save=True)
        time.sleep(down_s)
        return self.start()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


def frame(cam, seq, dim=16):
    """A deterministic FP32 row for camera `cam`, frame `seq`."""
    return (np.arange(dim, dtype="<f4") * 0.5 + cam * 1000 + seq * 0.25).astype("<f4")


def produce(r, prefix, cams, per_cam, start=0, dim=16, extra=None, batch=500):
    """XADD per_cam frames to each of `cams` streams `<prefix><cam>` (pipelined). Fields:
    input (raw FP32 bytes), camera, seq, ts. Returns {(stream, id): (cam, seq)}."""
    sent = {}
    pipe = r.pipeline(transaction=False)
    pending = []
    for seq in range(start, start + per_cam):
        for cam in range(cams):
            key = "%s%d" % (prefix, cam)
            fields = {"input": frame(cam, seq, dim).tobytes(), "camera": "cam-%d" % cam,
                      "seq": str(seq), "ts": "%.6f" % time.time()}
            if extra:
                fields.update(extra)
            pipe.xadd(key, fields)
            pending.append((key, cam, seq))
            if len(pending) >= batch:
                for (k, c, s), eid in zip(pending, pipe.execute()):
                    sent[(k, eid.decode())] = (c, s)
                pending = []
    if pending:
        for (k, c, s), eid in zip(pending, pipe.execute()):
            sent[(k, eid.decode())] = (c, s)
    return sent


def results(r, pattern="results:*"):
    """Every result entry of every stream matching `pattern`: list of (stream, id, fields)
    with bytes keys decoded to str (values stay bytes)."""
    out = []
    for key in r.scan_iter(match=pattern, _type="stream", count=1000):
        last = "-"
        while True:
            chunk = r.xrange(key, min=last, max="+", count=5000)
            if last != "-" and chunk and chunk[0][0].decode() == last:
                chunk = chunk[1:]
            if not chunk:
                break
            for eid, fields in chunk:
                out.append((key.decode(), eid.decode(),
                            {k.decode(): v for k, v in fields.items()}))
            last = chunk[-1][0].decode()
            if len(chunk) < 4999:
                break
    return out


def count_results(r, pattern="results:*"):
    return sum(r.xlen(k) for k in r.scan_iter(match=pattern, _type="stream", count=1000))


def answered(res):
    """{(source_stream, source_id): times answered} over result entries."""
    seen = {}
    for _key, _eid, f in res:
        k = (f["source_stream"].decode(), f["source_id"].decode())
        seen[k] = seen.get(k, 0) + 1
    return seen
