"""Speculative decoding by prompt lookup on the real SmolLM2: drafts verified in the batching step
give exactly the output of plain decoding (greedy), in every situation the engine meets."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from ollamalike.runner.engine import Request
from ollamalike.runner.speculative import PromptLookup, StepCost
from tests.test_engine_real import engine, model  # noqa: F401  (fixtures: SmolLM2 in process, 4 slots)

pytestmark = pytest.mark.real

CODE = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b\n"
REPEAT = f"<|im_start|>user\nRepeat this code exactly:\n{CODE}<|im_end|>\n<|im_start|>assistant\n"
STORY = "<|im_start|>user\nWrite a short story about a cat.<|im_end|>\n<|im_start|>assistant\n"


class Run:
    def __init__(self, engine, model, prompt, num_ctx=1024, **opts):
        self.events: list[dict] = []
        self.done = threading.Event()
        self.req = Request(tokens=model.tokenize(prompt), emit=self.emit, num_ctx=num_ctx,
                           options={"temperature": 0, "num_predict": 60, **opts})
        engine.submit(self.req)

    def emit(self, ev):
        self.events.append(ev)
        if "done" in ev or "error" in ev:
            self.done.set()

    def wait(self) -> "Run":
        assert self.done.wait(300), "request did not finish"
        assert "error" not in self.events[-1], self.events[-1]
        return self

    @property
    def text(self) -> str:
        return "".join(e.get("content", "") for e in self.events)

    def cancel_after_a_few(self, engine) -> None:
        """Cancel once a few events came, and wait until the engine let the sequence go."""
        deadline = time.monotonic() + 120
        while len(self.events) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.req.cancel()
        engine.wake()
        deadline = time.monotonic() + 60
        while engine.active and time.monotonic() < deadline:  # it leaves at the next step
            time.sleep(0.05)


def test_prompt_lookup_proposes_what_followed_the_last_ngram():
    p = PromptLookup(4, ngram=2)
    assert p.propose([1, 2, 3, 4, 5, 9, 1, 2], room=8) == [3, 4, 5, 9]
    assert p.propose([1, 2, 3, 4, 5, 9, 1, 2], room=2) == [3, 4]
    assert PromptLookup(4, ngram=2).propose([1, 2, 3], room=4) == []
    p.feedback(4, 0), p.feedback(1, 0), p.feedback(1, 0)  # three misses in a row: a pause
    assert p.propose([1, 2, 3, 4, 5, 9, 1, 2], room=8) == []


def test_prompt_lookup_resumes_the_copy_after_an_edited_token():
    """Rewriting its input with a change (a renamed variable), the output differs from the source in
    a token here and there: once a draft was taken for two tokens or more, the next goes on from the
    source just past the changed token (where the n-gram ending in the new token is found nowhere);
    after a shorter take the n-gram index is asked again."""
    src = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    p = PromptLookup(4, ngram=2)
    out = src + [0, 1, 2, 3]
    assert p.propose(out, room=8) == [4, 5, 6, 7]
    p.feedback(4, 2)  # 4 and 5 taken, then the model wrote 66 where the source has 6
    out += [4, 5, 66]
    assert p.propose(out, room=8) == [7, 8]  # k: half of 4, at most one past the 2 taken
    p.feedback(2, 2)
    out += [7, 8, 9]
    assert p.propose(out, room=8) == [0, 1, 2, 3]
    p.feedback(4, 1)  # one taken: the copy is over, the n-gram (5, 6) is looked up again
    out += [0, 11, 5, 6]
    assert p.propose(out, room=8) == [7, 8]  # not [4, 5], from the copy's distance


def test_greedy_output_is_identical_with_drafts(engine, model):
    plain = Run(engine, model, REPEAT).wait()
    before = dict(engine.stats)
    drafted = Run(engine, model, REPEAT, lookup_max=8).wait()
    assert drafted.text == plain.text and drafted.events[-1]["eval_count"] == plain.events[-1]["eval_count"]
    accepted = engine.stats["draft_accepted"] - before["draft_accepted"]
    assert accepted >= 20  # the repeat really was drafted: fewer steps for the same tokens
    assert engine.stats["steps"] - before["steps"] < plain.events[-1]["eval_count"]


def test_concurrent_sequences_with_different_acceptance(engine, model):
    alone = [Run(engine, model, p).wait().text for p in (REPEAT, STORY)]
    together = [Run(engine, model, p, lookup_max=6) for p in (REPEAT, STORY)]
    assert [r.wait().text for r in together] == alone


def _costs(per_row: float) -> StepCost:
    """A step cost table as if measured: `per_row` seconds a row, from 1 to 40 rows."""
    c = StepCost()
    for rows in range(1, 41):
        c.observe(rows, per_row * rows)
        c.observe(rows, per_row * rows)
    return c


def test_beside_other_sequences_a_draft_goes_only_where_its_rows_pay(engine, model):
    """Drafts beside other sequences' rows cost them time: with every row as dear as a whole step of
    one (a second a row), none is sent while two sequences run (their text unchanged); with rows
    free, they are."""
    plain = Run(engine, model, REPEAT).wait().text
    kept = engine.step_cost
    try:
        for per_row, drafts in ((1.0, False), (1e-9, True)):
            engine.step_cost = _costs(per_row)
            before = dict(engine.stats)
            with engine._cv:  # admitted in one round: they run in step, neither ever alone
                pair = [Run(engine, model, REPEAT, lookup_max=8) for _ in range(2)]
            assert [r.wait().text for r in pair] == [plain, plain]
            assert (engine.stats["draft_tokens"] > before["draft_tokens"]) == drafts
    finally:
        engine.step_cost = kept


def test_stop_string_inside_a_drafted_run(engine, model):
    plain = Run(engine, model, REPEAT, stop=["def mul"]).wait()
    drafted = Run(engine, model, REPEAT, stop=["def mul"], lookup_max=8).wait()
    assert drafted.text == plain.text and "def sub" in plain.text and "mul" not in plain.text
    assert drafted.events[-1]["done_reason"] == "stop"


def test_context_shift_with_drafts(engine, model):
    code = CODE * 2  # raw code: the model goes on writing more of it, far past a 64-token context
    plain = Run(engine, model, code, num_ctx=64, num_predict=150).wait()
    drafted = Run(engine, model, code, num_ctx=64, num_predict=150, lookup_max=8).wait()
    assert plain.events[-1]["eval_count"] == 150 and engine.stats["context_shifts"] >= 2
    assert drafted.text == plain.text


def test_cancellation_mid_draft_leaves_the_engine_clean(engine, model):
    plain = Run(engine, model, REPEAT).wait()
    r = Run(engine, model, REPEAT, lookup_max=8, num_predict=400)
    r.cancel_after_a_few(engine)
    assert not engine.active and len(r.events) < 400
    assert Run(engine, model, REPEAT, lookup_max=8).wait().text == plain.text


def test_lookup_by_request_option_and_modelfile_parameter(daemon, smollm2_gguf, tmp_path):
    def drafted() -> float:
        return daemon.metric_total("ollamalike_runner_draft_accepted_total")
    body = {"model": "smollm2:135m", "prompt": REPEAT, "raw": True, "stream": False,
            "options": {"temperature": 0, "num_predict": 40}}
    plain = requests.post(daemon.url + "/api/generate", json=body, timeout=120).json()["response"]
    before = drafted()
    body["options"]["lookup_max"] = 8
    assert requests.post(daemon.url + "/api/generate", json=body, timeout=120).json()["response"] == plain
    assert drafted() > before
    daemon.create("smol-lookup", smollm2_gguf, tmp_path, "PARAMETER lookup_max 8\n")
    try:
        before = drafted()
        del body["options"]["lookup_max"]
        out = requests.post(daemon.url + "/api/generate", json={**body, "model": "smol-lookup"}, timeout=120).json()
        assert out["response"] == plain and drafted() > before
    finally:
        daemon.cli("rm", "smol-lookup")
