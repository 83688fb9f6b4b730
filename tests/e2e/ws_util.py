"""Helpers the WebSocket tests share: an overall bound on a test coroutine, and a client
connection and receive with the bounds and settings those tests use (the `websockets`
library, no keepalive pings or compression of its own)."""
import asyncio

import pytest
import websockets

STEP_S = 15.0  # bound on any one receive / wait


def run(coro, timeout=60.0):
    """Run a test coroutine with an overall bound: a hang fails, it never blocks CI."""
    async def bounded():
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            pytest.fail("the test did not finish within %.0f s" % timeout, pytrace=False)
    return asyncio.run(bounded())


def ws_connect(port, path, **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("compression", None)
    kw.setdefault("open_timeout", STEP_S)
    kw.setdefault("close_timeout", STEP_S)
    return websockets.connect("ws://127.0.0.1:%d%s" % (port, path), **kw)


async def ws_recv(ws):
    try:
        return await asyncio.wait_for(ws.recv(), STEP_S)
    except asyncio.TimeoutError:
        pytest.fail("no message within %.1f s" % STEP_S, pytrace=False)
