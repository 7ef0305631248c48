"""What every fake venue shares: ``async with fake:`` runs its market clock in a nursery of
its own, and leaving the block cancels it and every connection it serves."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self

import trio

__all__ = ["RunsItsOwnNursery"]


class RunsItsOwnNursery:
    """Base of the fakes: subclasses set ``_nursery``, ``_nursery_cm`` and ``_t0`` to None in
    ``__init__`` and define ``_tick_loop``, the task that drives their market."""

    _nursery: trio.Nursery | None
    _nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None
    _t0: float | None

    async def _tick_loop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._nursery is not None:
            raise RuntimeError(f"a {type(self).__name__} can only be entered once")
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._t0 = trio.current_time()
        self._nursery.start_soon(self._tick_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None and self._nursery_cm is not None
        self._nursery.cancel_scope.cancel()
        return await self._nursery_cm.__aexit__(exc_type, exc, tb)
