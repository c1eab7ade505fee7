"""Request priority on the real daemon: one slot (NUM_PARALLEL=1), a long generation holding it,
several requests queued behind it, then an urgent one (lower priority value) that runs next."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.conftest import Daemon

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory, smollm2_gguf):
    tmp = tmp_path_factory.mktemp("priority")
    d = Daemon(tmp, OLLAMALIKE_NUM_PARALLEL="1")
    d.create("smollm2:135m", smollm2_gguf, tmp)
    yield d
    d.stop()


def test_urgent_request_is_admitted_ahead_of_queued_ones(one_slot):
    url = one_slot.url
    finished: list[str] = []
    lock = threading.Lock()

    def ask(name: str, path: str, body: dict) -> None:
        r = requests.post(url + path, json={"model": "smollm2:135m", "stream": False, **body}, timeout=170)
        assert r.status_code == 200, r.text
        with lock:
            finished.append(name)
    short = {"options": {"num_predict": 3, "temperature": 0}}
    ask("warm", "/api/generate", {"prompt": "hi", **short})  # loaded, so the rest only queue for the slot
    # the long request holds the only slot for as long as this test wants: it streams until closed
    long = requests.post(url + "/api/generate", stream=True, timeout=170, json={
        "model": "smollm2:135m", "prompt": "Write a very long story about a dragon.",
        "options": {"num_predict": 100000, "temperature": 0}})
    lines = long.iter_lines()
    assert b'"response"' in next(lines)  # generating
    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=ask, args=(f"queued{i}", "/api/generate",
                                                          {"prompt": f"Say {i}.", **short})))
        threads[-1].start()
        time.sleep(0.3)
    threads.append(threading.Thread(target=ask, args=("urgent", "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "temperature": 0,
        "priority": -10})))
    threads[-1].start()
    time.sleep(0.3)
    next(lines)
    assert finished == ["warm"]  # all four wait while the long one streams
    long.close()  # the slot is free: the urgent request is next, then the others in their order
    for t in threads:
        t.join(170)
    assert finished == ["warm", "urgent", "queued0", "queued1", "queued2"]
