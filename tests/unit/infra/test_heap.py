"""infra/heap.py: malloc_trim where glibc has it, nothing elsewhere."""

from __future__ import annotations

import pytest

from infra import heap

pytestmark = pytest.mark.unit


def test_trimming_is_a_no_op_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_malloc_trim", None)
    assert heap.can_trim() is False
    assert heap.trim_heap() is False


def test_trimming_calls_malloc_trim_with_zero_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    assert heap.trim_heap() is True
    assert calls == [0]
