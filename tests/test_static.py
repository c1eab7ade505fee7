"""Names that do not exist: a merge or a move between modules can leave one on a path no other test
takes (it happened: core's removed-draft path lost its OllamaError import). pyflakes reads every module."""

from __future__ import annotations

import ast
from pathlib import Path

from pyflakes import checker, messages

from tests.conftest import ROOT

FATAL = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)


def test_no_undefined_names_in_the_package():
    found = []
    for path in sorted((ROOT / "ollamalike").rglob("*.py")) + sorted((ROOT / "registry").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for msg in checker.Checker(tree, filename=str(path)).messages:
            if isinstance(msg, FATAL):
                found.append(str(msg))
    assert not found, "\n".join(found)


def test_the_check_finds_an_undefined_name(tmp_path):
    tree = ast.parse("def f():\n    raise OllamaError('x')\n")
    assert any(isinstance(m, messages.UndefinedName) for m in checker.Checker(tree, filename="x.py").messages)
