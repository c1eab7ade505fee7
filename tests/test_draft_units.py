"""The draft-model proposer with a fake model: what it decodes, what it keeps, what it drops."""

from __future__ import annotations

import pytest

from ollamalike.runner.speculative import DraftModel, DraftSeq


class FakeModel:
    """Predicts token + 1 after each token; 9 ends generation. Records every decode and seq_rm."""

    seq_ctx = 32
    n_batch = 4

    def __init__(self):
        self.batches: list[list[tuple[int, int, int, bool]]] = []
        self.removed: list[tuple[int, int, int]] = []
        self.fail = False

    def decode(self, rows):
        if self.fail:
            return -1
        self.batches.append(list(rows))
        return 0

    def argmax(self, row):
        return self.batches[-1][row][0] + 1

    def is_eog(self, tok):
        return tok == 9

    def seq_rm(self, seq, p0=-1, p1=-1):
        self.removed.append((seq, p0, p1))


def test_catch_up_in_chunks_then_one_decode_per_draft_position_for_all_slots():
    m = FakeModel()
    d = DraftModel(m)
    out = d.propose_many({0: ([1, 2, 3, 4, 5], 3), 1: ([3], 2)})
    assert out == {0: [6, 7, 8], 1: [4, 5]}
    # catch-up: six rows in chunks of n_batch 4, logits on each sequence's last token
    assert m.batches[0] == [(1, 0, 0, False), (2, 1, 0, False), (3, 2, 0, False), (4, 3, 0, False)]
    assert m.batches[1] == [(5, 4, 0, True), (3, 0, 1, True)]
    assert m.batches[2] == [(6, 5, 0, True), (4, 1, 1, True)]  # both slots in one decode
    assert m.batches[3] == [(7, 6, 0, True)]  # slot 1 has its two
    assert d.seen == {0: [1, 2, 3, 4, 5, 6, 7], 1: [3, 4]}


def test_rejected_drafts_are_removed_and_only_the_missing_tokens_decoded():
    m = FakeModel()
    d = DraftModel(m)
    d.propose(0, [1, 2], 3)  # drafts 3 4 5; 3 and 4 are in the draft's cache
    m.batches.clear()
    assert d.propose(0, [1, 2, 3, 7], 2) == [8, 9]  # 3 was taken, then the target chose 7
    assert m.removed == [(0, 3, -1)]  # the draft's 4 is dropped
    assert m.batches[0] == [(7, 3, 0, True)]


def test_end_of_generation_ends_a_draft_and_too_long_sequences_get_none():
    m = FakeModel()
    d = DraftModel(m)
    assert d.propose(0, [6], 8) == [7, 8, 9]
    assert d.propose(1, list(range(30)), 4) == []  # 30 + 4 > seq_ctx 32
    assert d.propose(2, [1], 0) == []


def test_a_failed_decode_forgets_the_stream():
    m = FakeModel()
    d = DraftModel(m)
    d.propose(0, [1, 2], 2)
    m.fail = True
    assert d.propose(0, [1, 2, 5], 2) == []
    assert d.seen[0] == [] and m.removed[-1] == (0, -1, -1)
    m.fail = False
    assert d.propose(0, [1, 2, 5], 2) == [6, 7]  # rebuilt from the start


def test_more_slots_than_a_batch_holds_draft_in_parts():
    m = FakeModel()
    m.n_batch = 2
    d = DraftModel(m)
    assert d.propose_many({s: ([s], 2) for s in range(3)}) == {0: [1, 2], 1: [2, 3], 2: [3, 4]}
    assert all(len(b) <= 2 for b in m.batches)


def test_the_draft_length_follows_the_acceptance():
    """A draft model's draft length adapts as prompt lookup's does: whole drafts taken grow it (up to
    draft_max), misses shrink it to just past what was taken, and three drafts in a row rejected at
    once pause drafting for 8 steps; the counts stay for the final record."""
    seq = DraftSeq(DraftModel(FakeModel()), 8)
    assert seq.next_k() == 8
    seq.feedback(8, 2)
    assert seq.next_k() == 3  # half of 8, at most one past the 2 taken
    seq.feedback(3, 3)
    assert seq.next_k() == 5
    seq.feedback(5, 5), seq.feedback(7, 7)
    assert seq.next_k() == 8  # never past draft_max
    for _ in range(3):
        seq.feedback(seq.next_k(), 0)
    assert [seq.next_k() for _ in range(9)] == [0] * 8 + [1]
    assert (seq.proposed, seq.accepted) == (8 + 3 + 5 + 7 + 8 + 1 + 1, 2 + 3 + 5 + 7)


def test_prompt_lookup_keeps_its_full_draft_through_an_edit_in_a_copy():
    """A draft taken for three tokens or more, then missed, is a copy of the input with an edit (a
    renamed variable): the copy goes on past it, so the next draft is full length again, where a
    shorter take shrinks it as for any draft (on this CPU a wasted row costs half a token)."""
    from ollamalike.runner.speculative import PromptLookup
    p = PromptLookup(8)
    assert p.next_k() == 8
    p.feedback(8, 3)
    assert p.next_k() == 8
    p.feedback(8, 2)
    assert p.next_k() == 3  # half of 8, at most one past the 2 taken


def test_step_cost_learns_row_counts_and_fills_the_gaps_with_a_line():
    from ollamalike.runner.speculative import StepCost
    c = StepCost(weight=0.5)
    c.observe(1, 9.0)  # a row count's first decode builds llama.cpp's graph: not counted
    assert c.estimate(1) is None
    c.observe(1, 0.010)
    c.observe(1, 0.020)
    assert c.estimate(1) == pytest.approx(0.015)
    assert c.estimate(9) is None  # one row count measured: no line yet, so a draft is tried
    assert c.pays(1, 1, 8, 0.0)
    c.observe(5, 1.0)
    c.observe(5, 0.035)
    assert c.estimate(9) == pytest.approx(0.015 + 8 * 0.005)  # on the line through 1 and 5 rows
    assert c.pays(1, 1, 8, 3.0) and not c.pays(1, 1, 8, 2.0)  # 4 tokens in 55 ms beat 1 in 15; 3 do not


def test_step_cost_forgets_a_figure_not_refreshed_lately():
    from ollamalike.runner.speculative import StepCost
    c = StepCost()
    for rows in (1, 1, 9, 9):
        c.observe(rows, 0.01 * rows)
    for _ in range(StepCost.STALE + 1):
        c.observe(1, 0.01)
    assert c.estimate(9) is None and not c._fit()  # 9 rows too dear on an old reading: tried again
    assert c.pays(1, 1, 8, 0.0)


def test_a_withheld_draft_is_scored_against_what_followed_without_counting_as_drafted():
    from ollamalike.runner.speculative import PromptLookup
    p = PromptLookup(8)
    p.feedback(8, 0)
    assert p.next_k() == 1 and p.taken_share() < 0.1
    tokens = [5, 6, 7, 1, 2, 3, 4, 5, 6, 7]
    draft = p.propose(tokens, 8)
    assert draft == [1]
    p.withhold(len(tokens), draft)
    p.propose(tokens + [1], 8)  # the withheld draft would have been taken whole
    assert p.next_k() == 3
    share = p.taken_share()
    p.withhold(11, [2, 3, 4])
    p.propose(tokens + [1, 2, 3, 4], 8)  # taken whole again, three tokens: a copy under way
    assert p.next_k() == 8 and p.taken_share() > share
    p.withhold(14, [5, 6, 7, 9])
    p.propose(tokens + [1, 2, 3, 4, 5, 8], 8)  # cut at its second token
    assert p.next_k() == 2 and (p.proposed, p.accepted) == (8, 0)  # only the draft sent counts
