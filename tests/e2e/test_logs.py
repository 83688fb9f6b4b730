"""What clients send never forges a log line: control characters in anything logged are
written as \\xNN (issue 8: `POST /v2/repository/models/x%0a<text>/load`)."""
import re

import pytest


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("real", [("INPUT0", "FP32", [1])], max_batch_size=1)
    return start_server(repo, args=["--model-control", "explicit"])


def test_encoded_newline_in_a_model_name_stays_on_its_line(client):
    forged = "2026-01-01T00:00:00.000Z ERROR forged line=1"
    r = client.post("/v2/repository/models/x%0a" + forged.replace(" ", "%20") + "/load")
    assert r.status_code == 400, r.text
    r = client.post("/v2/repository/models/y%0d%0a%1bz/unload")
    assert r.status_code == 400, r.text
    client.assert_healthy()
    log = client.server.log()
    assert not any(line.startswith(forged) for line in log.splitlines()), log[-2000:]
    assert "forged" not in log or re.search(r"\\x0a2026-01-01T00:00:00\.000Z ERROR forged", log)
    # Every line the server wrote starts with its own timestamp and level.
    for line in log.splitlines():
        if line.strip():
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) ",
                            line), line
