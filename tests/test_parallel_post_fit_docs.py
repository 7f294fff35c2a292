"""The examples in the ParallelPostFit docs pages run and print what they show."""

from __future__ import annotations

import doctest
import pathlib

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("page", ["quickstart.md", "input-kinds.md"])
def test_doc_examples(page):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testfile(str(DOCS / page), module_relative=False, optionflags=flags)
    assert result.attempted > 0
    assert result.failed == 0
