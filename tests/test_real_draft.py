"""Speculative decoding with a draft model on the real SmolLM2 (its own draft: nearly every draft
token is accepted): greedy output identical token for token to the target alone."""

from __future__ import annotations

import pytest

from ollamalike.runner.engine import Engine
from ollamalike.runner.llama import LlamaModel, LoadParams
from ollamalike.runner.speculative import DraftModel
from tests.test_engine_real import model  # noqa: F401  (fixture: SmolLM2 in process, 4 slots)
from tests.test_real_speculative import REPEAT, STORY, Run

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def draft_model(smollm2_gguf):
    m = LlamaModel(LoadParams(path=str(smollm2_gguf), n_ctx=1024 * 4, n_seq_max=4, num_ctx=1024))
    yield m
    m.close()


@pytest.fixture
def engine(model, draft_model):  # noqa: F811
    e = Engine(model, 4, draft=DraftModel(draft_model))
    e.start()
    yield e
    e.close()
    for sl in e.slots:
        model.seq_rm(sl.seq_id)
        draft_model.seq_rm(sl.seq_id)


def test_greedy_output_is_identical_with_the_draft_model(engine, model):  # noqa: F811
    plain = Run(engine, model, STORY).wait()
    before = dict(engine.stats)
    drafted = Run(engine, model, STORY, draft_num_predict=4).wait()
    assert drafted.text == plain.text and drafted.events[-1]["tokens"] == plain.events[-1]["tokens"]
    final = drafted.events[-1]
    proposed = engine.stats["draft_tokens"] - before["draft_tokens"]
    accepted = engine.stats["draft_accepted"] - before["draft_accepted"]
    assert final["draft_count"] == proposed and final["draft_accepted_count"] == accepted
    assert accepted > 0 and accepted >= 0.9 * proposed  # its own draft: nearly all taken
    assert engine.stats["steps"] - before["steps"] < plain.events[-1]["eval_count"] / 2
    assert "draft_count" not in plain.events[-1]


def test_draft_max_is_accepted_too(engine, model):  # noqa: F811
    plain = Run(engine, model, REPEAT, num_predict=30).wait()
    before = engine.stats["draft_accepted"]
    assert Run(engine, model, REPEAT, num_predict=30, draft_max=3).wait().text == plain.text
    assert engine.stats["draft_accepted"] > before


def test_concurrent_sequences_with_drafts(engine, model):  # noqa: F811
    alone = [Run(engine, model, p).wait().text for p in (REPEAT, STORY)]
    together = [Run(engine, model, p, draft_num_predict=5) for p in (REPEAT, STORY)]
    assert [r.wait().text for r in together] == alone
    again = [Run(engine, model, p, draft_num_predict=3) for p in (STORY, REPEAT)]  # slots swap texts
    assert [r.wait().text for r in again] == alone[::-1]


def test_draft_model_and_prompt_lookup_side_by_side(engine, model):  # noqa: F811
    alone = [Run(engine, model, p).wait().text for p in (REPEAT, STORY)]
    together = [Run(engine, model, REPEAT, lookup_max=8), Run(engine, model, STORY, draft_num_predict=4)]
    assert [r.wait().text for r in together] == alone
    assert together[1].events[-1]["draft_accepted_count"] > 0


def test_cancellation_mid_draft_leaves_the_engine_clean(engine, model):  # noqa: F811
    plain = Run(engine, model, STORY).wait()
    r = Run(engine, model, STORY, draft_num_predict=4, num_predict=400)
    r.cancel_after_a_few(engine)
    assert not engine.active and len(r.events) < 400
    assert Run(engine, model, STORY, draft_num_predict=4).wait().text == plain.text


def test_stop_string_inside_a_drafted_run(engine, model):  # noqa: F811
    plain = Run(engine, model, REPEAT, stop=["def mul"]).wait()
    drafted = Run(engine, model, REPEAT, stop=["def mul"], draft_num_predict=6).wait()
    assert drafted.text == plain.text and "def sub" in plain.text and "mul" not in plain.text
    assert drafted.events[-1]["done_reason"] == "stop"


def test_context_shift_with_drafts(engine, model):  # noqa: F811
    code = "def add(a, b):\n    return a + b\n\n" * 4
    plain = Run(engine, model, code, num_ctx=64, num_predict=120).wait()
    drafted = Run(engine, model, code, num_ctx=64, num_predict=120, draft_num_predict=4).wait()
    assert engine.stats["context_shifts"] >= 2 and drafted.text == plain.text


def test_modelfile_draft_end_to_end(daemon, smollm2_gguf, tmp_path):
    import requests

    def accepted() -> float:
        return daemon.metric_total("ollamalike_runner_draft_accepted_total")
    body = {"model": "smollm2:135m", "prompt": STORY, "raw": True, "stream": False,
            "options": {"temperature": 0, "num_predict": 40}}
    plain = requests.post(daemon.url + "/api/generate", json=body, timeout=120).json()
    daemon.create("smol-draft", smollm2_gguf, tmp_path, "DRAFT smollm2:135m\nPARAMETER draft_num_predict 4\n")
    try:
        before = accepted()
        out = requests.post(daemon.url + "/api/generate", json={**body, "model": "smol-draft"}, timeout=120).json()
        assert out["response"] == plain["response"] and out["eval_count"] == plain["eval_count"]
        assert out["draft_accepted_count"] >= 0.9 * out["draft_count"] > 0 and "draft_count" not in plain
        assert accepted() - before == out["draft_accepted_count"]
        body["options"]["draft_num_predict"] = 0  # off by request option
        out = requests.post(daemon.url + "/api/generate", json={**body, "model": "smol-draft"}, timeout=120).json()
        assert out["response"] == plain["response"] and "draft_count" not in out
        shown = daemon.cli("show", "smol-draft", "--modelfile")
        assert "DRAFT smollm2:135m" in shown.stdout
    finally:
        daemon.cli("rm", "smol-draft")


def test_modelfile_draft_as_a_gguf_path(daemon, smollm2_gguf, tmp_path):
    import requests

    body = {"prompt": REPEAT, "raw": True, "stream": False, "options": {"temperature": 0, "num_predict": 30}}
    plain = requests.post(daemon.url + "/api/generate", json={**body, "model": "smollm2:135m"}, timeout=120).json()
    daemon.create("smol-draft-file", smollm2_gguf, tmp_path, f"DRAFT {smollm2_gguf}\n")
    try:
        body["options"]["draft_max"] = 3  # by request option
        out = requests.post(daemon.url + "/api/generate", json={**body, "model": "smol-draft-file"}, timeout=120).json()
        assert out["response"] == plain["response"] and out["draft_accepted_count"] > 0
    finally:
        daemon.cli("rm", "smol-draft-file")
