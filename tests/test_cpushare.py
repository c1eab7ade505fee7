"""The table through which a daemon's runners share the CPU (runner/cpushare.py), without a model."""

from __future__ import annotations

import os
import time

from ollamalike.runner import cpushare
from ollamalike.runner.cpushare import CpuBoard, CpuShare


def test_busy_runners_split_the_cores_and_an_idle_one_does_not_count():
    board = CpuBoard()
    slots = [board.assign(object()) for _ in range(3)]
    assert slots == [0, 1, 2]
    a, b, c = (CpuShare(board.fd, s, cores=8) for s in slots)
    assert a.begin() == 8 and a.shared_steps == 0  # alone
    assert b.begin() == 4  # a is mid-step
    a.end()
    assert c.begin() == 2 and c.busy_others == 2  # a stepped just now, b is mid-step
    b.end(), c.end()
    time.sleep(cpushare.BUSY_WINDOW + 0.05)
    assert a.begin() == 8 and a.busy_others == 0  # the others went quiet
    a.end()


def test_a_user_set_thread_count_is_kept_but_still_counts_as_busy():
    board = CpuBoard()
    fixed = CpuShare(board.fd, board.assign(object()), cores=3, fixed=True)
    other = CpuShare(board.fd, board.assign(object()), cores=4)
    fixed.begin()
    assert other.begin() == 2
    assert fixed.begin() == 3 and fixed.shared_steps == 0


def test_slots_of_dead_runners_are_reused_and_cleared():
    board = CpuBoard()
    dead = type("R", (), {"alive": False})()
    s0 = board.assign(dead)
    share = CpuShare(board.fd, s0, cores=2)
    share.begin()  # died mid-step
    s1 = board.assign(object(), alive=lambda r: getattr(r, "alive", True))
    assert s1 == s0
    fresh = CpuShare(board.fd, board.assign(object()), cores=2)
    assert fresh.begin() == 2  # the dead runner's step was cleared


def test_from_env_reads_the_daemons_slot_once():
    board = CpuBoard()
    os.environ[cpushare.FD_ENV] = board.env(5)
    share = CpuShare.from_env(cores=2)
    assert share is not None and share.slot == 5 and cpushare.FD_ENV not in os.environ
    assert CpuShare.from_env(cores=2) is None  # started by hand: no sharing
