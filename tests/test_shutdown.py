"""SIGTERM under load: readiness turns false at once, the server serves on through the drain time, then takes no
new connections, finishes what is in flight on both faces, and exits 0. No request it accepted goes unanswered."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from arbiter.clients import RewardClient
from tests.server import running_server

SMALL = {"items": [{"prompt": "How are you?", "response": "Fine, thanks."}] * 8}
LARGE = {"items": [{"prompt": "Tell me about lighthouses. " * 20, "response": "They guide ships. " * 40}] * 64}


def test_sigterm_under_load_drains_and_drops_nothing(bundle_dir: Path, tmp_path: Path):
    flags = ["--bundles", f"rm={bundle_dir}", "--shutdown-drain-s", "1.5", "--judge-backend", "off"]
    with running_server(tmp_path, *flags) as server:
        url, stop = server.url, threading.Event()
        outcomes: Counter[str] = Counter()
        after_signal: Counter[str] = Counter()
        signalled = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:  # a new connection each time: after the drain a refused connect is the only way to fail
                    outcome = str(httpx.post(url + "/v1/score", json=SMALL, timeout=60).status_code)
                except httpx.ConnectError:
                    outcome = "refused"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                outcomes[outcome] += 1
                if signalled.is_set():
                    after_signal[outcome] += 1
                if outcome == "refused":
                    time.sleep(0.05)

        with ThreadPoolExecutor(9) as pool:
            workers = [pool.submit(hammer) for _ in range(6)]
            time.sleep(2.0)
            large = pool.submit(lambda: httpx.post(url + "/v1/score", json=LARGE, timeout=120))
            streamed = pool.submit(lambda: RewardClient(server.grpc_url).score("Tell me a story. " * 30, ["Once"] * 64))
            time.sleep(0.2)  # both are in flight
            server.process.send_signal(signal.SIGTERM)
            signalled.set()
            time.sleep(0.3)
            ready = httpx.get(url + "/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "shutting_down"
            assert httpx.post(url + "/v1/score", json=SMALL).status_code == 200  # still serving while draining
            assert server.process.wait(timeout=60) == 0
            stop.set()
            for worker in workers:
                worker.result()
            assert large.result().status_code == 200 and len(large.result().json()["scores"]) == 64
            assert len(streamed.result().scores) == 64

    # No 5xx. A connection the kernel queued just as the listener closed is reset unread (RemoteProtocolError):
    # the request never reached the server, and clients retry it (RewardClient does).
    assert set(outcomes) <= {"200", "refused", "RemoteProtocolError"}, outcomes
    assert after_signal["200"] > 0 and after_signal["refused"] > 0  # served through the drain, then closed
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    answered = sum(1 for line in lines if line.get("route") == "/v1/score" and line.get("status") == 200)
    assert answered == outcomes["200"] + 2  # every request the server took was answered (+ the probe and LARGE)
    messages = {line["msg"] for line in lines}
    assert {"shutting down", "stopped"} <= messages
