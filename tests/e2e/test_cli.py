"""The command line outside `serve`: version, bad arguments; and the port-0 log line."""
import os
import re
import subprocess

import pytest

from conftest import BATCHD_BIN, ORT_LIB, SANITIZER_MARKERS, sanitizer_env


def _run(*args, timeout=30):
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s (build it: cmake --build build -j2)"
                    % BATCHD_BIN)
    r = subprocess.run([BATCHD_BIN] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=sanitizer_env())
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r


def test_version():
    r = _run("version")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert re.search(r"batchd\D*\d+\.\d+\.\d+", out, re.I), out
    if os.path.isfile(ORT_LIB):
        assert "1.30.0" in out, "ONNX Runtime version missing from: %r" % out
        assert re.search(r"onnx\s*runtime", out, re.I), out
        assert r.stderr == "", r.stderr  # the answer, without the log's "loaded" line


def test_version_flags_and_environment(tmp_path):
    """`version` takes its flag from BATCHD_ONNXRUNTIME_LIB too, refuses an unknown flag (exit
    2) and exits 1 when the library cannot be loaded."""
    r = _run("version", "--bogus")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "batchd version: unknown flag '--bogus' (see --help)\n"
    missing = str(tmp_path / "libonnxruntime.so.1")
    env = dict(sanitizer_env(), BATCHD_ONNXRUNTIME_LIB=missing)
    r = subprocess.run([BATCHD_BIN, "version"], capture_output=True, text=True, timeout=30,
                       env=env)
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith("batchd ")
    assert "onnxruntime unavailable: cannot load ONNX Runtime from '%s'" % missing in r.stdout
    r = _run("version", "--onnxruntime-lib", missing)
    assert r.returncode == 1 and missing in r.stdout


def test_unknown_subcommand_fails():
    r = _run("frobnicate")
    assert r.returncode != 0
    assert r.stderr.strip(), "no usage message on stderr"


def test_serve_without_repository_fails():
    r = _run("serve", "--http-port", "0", "--host", "127.0.0.1", timeout=30)
    assert r.returncode != 0
    assert "model-repository" in r.stderr


def test_serve_with_missing_repository_fails(tmp_path):
    r = _run("serve", "--model-repository", str(tmp_path / "nope"), "--http-port", "0",
             "--host", "127.0.0.1", timeout=30)
    assert r.returncode == 2
    assert r.stderr == "batchd serve: --model-repository '%s': No such file or directory\n" % (
        tmp_path / "nope")
    (tmp_path / "file").write_text("")
    r = _run("serve", "--model-repository", str(tmp_path / "file"), timeout=30)
    assert r.returncode == 2 and r.stderr.endswith("' is not a folder\n"), r.stderr


def test_serve_with_an_unreadable_repository_fails_with_2():
    """A folder this user cannot read fails the start like a missing one: exit 2, one line.
    As root, the server runs as nobody (setpriv), for whom mode 000 means something."""
    import shutil
    import tempfile
    base = tempfile.mkdtemp(prefix="batchd-unreadable-")
    try:
        os.chmod(base, 0o755)
        repo = os.path.join(base, "repo")
        os.mkdir(repo, 0o000)
        os.chmod(repo, 0o000)
        args = ["serve", "--model-repository", repo, "--http-port", "0"]
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv to drop to another user")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BATCHD_BIN]
        else:
            cmd = [BATCHD_BIN]
        r = subprocess.run(cmd + args, capture_output=True, text=True, timeout=30,
                           env=sanitizer_env())
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert r.stderr == ("batchd serve: --model-repository '%s' cannot be read: "
                            "Permission denied\n" % repo), r.stderr
    finally:
        os.chmod(os.path.join(base, "repo"), 0o755)
        shutil.rmtree(base)


def test_serve_errors_name_the_flag_or_the_environment_variable(tmp_path):
    """A bad value fails the start with exit 2 and one sentence that names where it came
    from: the flag when the command line has it, else its BATCHD_* variable."""
    cases = [(["--host", "999.1.1.1"], {}, "--host '999.1.1.1' does not resolve"),
             ([], {"BATCHD_HOST": "999.1.1.1"}, "BATCHD_HOST '999.1.1.1' does not resolve"),
             (["--log-level", "loud"], {}, "--log-level must be debug, info, warn or error, got"),
             ([], {"BATCHD_LOG_LEVEL": "loud"}, "BATCHD_LOG_LEVEL must be"),
             ([], {"BATCHD_MODEL_CONTROL": "x"}, "BATCHD_MODEL_CONTROL must be none,"),
             ([], {"BATCHD_RATE_LIMIT": "x"}, "BATCHD_RATE_LIMIT must be RPS"),
             (["--rate-limit", "x"], {"BATCHD_RATE_LIMIT": "5"}, "--rate-limit must be RPS"),
             # CONFIG.md: a malformed variable fails even when a flag replaces it.
             (["--log-level", "info"], {"BATCHD_LOG_LEVEL": "loud"},
              "BATCHD_LOG_LEVEL must be debug, info, warn or error, got 'loud'"),
             (["--rate-limit", "5"], {"BATCHD_RATE_LIMIT": "zero"}, "BATCHD_RATE_LIMIT must be"),
             (["--strict-readiness", "false"], {"BATCHD_STRICT_READINESS": "perhaps"},
              "BATCHD_STRICT_READINESS must be true or false"),
             (["--model-control", "none"], {"BATCHD_MODEL_CONTROL": "sometimes"},
              "BATCHD_MODEL_CONTROL must be none, explicit or poll, got 'sometimes'"),
             (["--redis", "redis://127.0.0.1:1"], {"BATCHD_REDIS": "http://x"},
              "BATCHD_REDIS: --redis must look like redis://"),
             # A password whose '@HOST' was left out is not echoed: what follows the ':'
             # is shown only when it is a port.
             ([], {"BATCHD_REDIS": "redis://:s3cretPW"},
              "BATCHD_REDIS: --redis must look like redis://HOST[:PORT][/DB] or "
              "redis://[USER]:PASSWORD@HOST[:PORT][/DB] (port 6379 when left out), or "
              "unix://[[USER]:PASSWORD@]/PATH[?db=DB] for a Redis on this machine, got "
              "'redis://:...'\n"),
             (["--redis", "redis://u:s3cretPW/"], {},
              "--redis must look like redis://HOST[:PORT][/DB] or redis://[USER]:PASSWORD@HOST"
              "[:PORT][/DB] (port 6379 when left out), or unix://[[USER]:PASSWORD@]/PATH[?db=DB] for "
              "a Redis on this machine, got 'redis://u:...'\n"),
             # /DB and ?db= take digits only, as Redis numbers its databases.
             (["--redis", "redis://h:6379/+1"], {}, "--redis must look like redis://HOST"),
             (["--redis", "redis://h:99999/0"], {}, "--redis must look like redis://HOST[:PORT]"
              "[/DB] or redis://[USER]:PASSWORD@HOST[:PORT][/DB] (port 6379 when left out), or "
              "unix://[[USER]:PASSWORD@]/PATH[?db=DB] for a Redis on this machine, got "
              "'redis://h:99999/0'\n"),
             # unix://: an absolute path to a file, of a file name's usual characters, then
             # ?db=N only.
             (["--redis", "unix://run/redis.sock"], {}, "--redis must look like redis://HOST"),
             (["--redis", "unix://"], {}, "--redis must look like redis://HOST"),
             (["--redis", "unix:///"], {}, "--redis must look like redis://HOST"),
             (["--redis", "unix:///run/redis/"], {}, "--redis must look like redis://HOST"),
             (["--redis", "unix:///run/redis sock"], {},
              "--redis: a unix socket's path may hold letters, digits and ./-_+~,= only, got "
              "'unix:///run/redis sock'\n"),
             (["--redis", "unix:///run/redis.sock?db=+1"], {},
              "--redis must look like redis://HOST"),
             (["--redis", "unix:///" + "x" * 107], {},
              "--redis: a unix socket's path may be at most 107 bytes, got 108 in"),
             (["--redis", "unix:///run/redis.sock?db=x"], {},
              "--redis must look like redis://HOST"),
             (["--redis", "unix:///run/redis.sock?password=x"], {},
              "--redis must look like redis://HOST"),
             (["--redis", "unix://:s3cretPW@/run/redis.sock#x"], {},
              "--redis: a unix socket's path may hold letters, digits and ./-_+~,= only, got "
              "'unix://...@/run/redis.sock#x'\n"),
             (["--redis", "unix://:s3cretPW@/" + "x" * 120], {},
              "--redis: a unix socket's path may be at most 107 bytes, got 121 in "
              "'unix://...@/xxx"),
             (["--redis-consumer", "c"], {"BATCHD_REDIS_CONSUMER": "x" * 201},
              "BATCHD_REDIS_CONSUMER must be 1 to 200 characters")]
    for args, env, want in cases:
        r = subprocess.run([BATCHD_BIN, "serve", "--model-repository", str(tmp_path)] + args,
                           capture_output=True, text=True, timeout=30,
                           env=dict(sanitizer_env(), **env))
        assert r.returncode == 2, (args, env, r.stderr)
        assert r.stderr.startswith("batchd serve: " + want) and r.stderr.count("\n") == 1, (
            args, env, r.stderr)


def test_a_port_in_use_fails_the_start_before_any_model_loads(start_server):
    """The listening address is checked first: a port another process holds fails the start
    with exit 1 and one line, and no model was loaded (it was found only after every model had
    loaded, which with large models and warmup took long)."""
    import socket
    repo = start_server.repo()
    repo.add_sim("slowload", [("INPUT0", "FP32", [1])], max_batch_size=1)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        r = subprocess.run([BATCHD_BIN, "serve", "--model-repository", repo.path, "--host",
                            "127.0.0.1", "--http-port", str(port)], capture_output=True,
                           text=True, timeout=30, env=sanitizer_env())
        assert r.returncode == 1, r.stderr
        assert r.stderr.rstrip().endswith(
            "ERROR serve cannot listen on 127.0.0.1:%d: Address already in use" % port), r.stderr
        assert "model=slowload" not in r.stderr, r.stderr
    finally:
        holder.close()
    # Port 0 too: an address this machine does not have (TEST-NET-1) fails first.
    r = subprocess.run([BATCHD_BIN, "serve", "--model-repository", repo.path, "--host",
                        "192.0.2.1", "--http-port", "0"], capture_output=True, text=True,
                       timeout=30, env=sanitizer_env())
    assert r.returncode == 1, r.stderr
    assert "ERROR serve cannot listen on 192.0.2.1:0: " in r.stderr, r.stderr
    assert "model=slowload" not in r.stderr, r.stderr


def test_serve_bad_port_fails(tmp_path):
    r = _run("serve", "--model-repository", str(tmp_path), "--http-port", "99999",
             "--host", "127.0.0.1", timeout=30)
    assert r.returncode != 0
    assert r.stderr.strip()


def test_port_zero_logs_real_port(start_server, tmp_path_factory):
    repo = start_server.repo()
    repo.add_sim("p", [("INPUT0", "FP32", [1])], max_batch_size=1)
    client = start_server(repo)
    assert 0 < client.server.port < 65536
    line = client.server.wait_log(r"http listening host=127\.0\.0\.1 port=\d+")
    assert line and "port=0" not in line
    assert client.get("/v2/health/live").status_code == 200
