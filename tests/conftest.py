"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
from trio_feed.runtime.sinks import Sink, run_inline


@pytest.fixture
def inline_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sinks write on the event loop instead of in worker threads, so that on the autojump
    clock every write lands at the same virtual time in every run (a thread takes real time,
    which the virtual clock does not see)."""
    monkeypatch.setattr(Sink, "run_sync", staticmethod(run_inline))
