"""Captures: every raw frame and REST response a feed receives, as JSON lines.

``trio-feed record`` (and ``open_feed(..., recorder=...)``) hand each batch of frames a
connection reader receives, each REST response and each connection state change to a
`Recorder`, which writes them to a file in arrival order, one JSON object a line::

    {"t": 1767225600013, "venue": "binance-usdm", "kind": "ws",
     "conn": "binance-usdm/market/0", "data": "{\\"stream\\":...}"}
    {"t": 1767225600020, "venue": "binance-usdm", "kind": "rest",
     "request": "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=3", "status": 200,
     "data": "[[...]]"}
    {"t": 1767225600021, "venue": "binance-usdm", "kind": "state",
     "conn": "binance-usdm/market/0", "state": "LOST", "previous": "SUBSCRIBED",
     "time": 1767225600021, "streams": ["btcusdt@aggTrade"], "retry": 0}

``t`` is the feed's local wall clock in ms. The ``ws`` and ``rest`` lines are the contract's
capture format; the ``state`` lines are the one addition: a capture without them cannot say
when a socket was lost and reopened (Binance subscribes in the URL, so a new socket begins
without a frame that tells), and the catch-up fills and book resets a live run does then are
what makes its later events what they are (see :mod:`trio_feed.runtime.replay`).

The taps are synchronous and cheap (a list append per batch, no encoding): the encoding and
the writes run in a worker thread, like the JSON lines sink, flushed per batch. The buffer
is bounded: a writer that falls `RECORDER_MAX_BUFFER` items behind (a stalled disk) stops
the recording, loudly, rather than growing memory or leaving a silent hole in the capture
(a replay of a capture with a hole would not be the run it claims to be).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import IO, Any, ClassVar

import orjson
import trio

from ..events import StateChange

__all__ = ["RECORDER_MAX_BUFFER", "Recorder", "open_recorder"]

log = logging.getLogger("trio_feed.recording")

#: Frames and responses that may wait for the writer before the recording stops.
RECORDER_MAX_BUFFER = 200_000
#: How long leaving `open_recorder` waits for the writer to write what is buffered.
DRAIN_TIMEOUT = 10.0

# One pending item: (kind, t, venue, fields...). Tuples, not dicts: the taps run on the
# readers' hot path, so the work of building the JSON objects is left to the writer thread.
_Item = tuple[Any, ...]


class Recorder:
    """Writes a capture to a binary file (see the module docstring).

    The taps (`frames`, `response`, `state`) never block and never raise; `run` writes what
    they buffer until `close`, then flushes. Use `open_recorder` to get one that runs.
    """

    #: How the writes run: `trio.to_thread.run_sync`. Tests on a virtual clock swap in
    #: `~trio_feed.runtime.sinks.run_inline` (a thread takes real time, which they do not see).
    run_sync: ClassVar[Callable[..., Awaitable[Any]]] = staticmethod(trio.to_thread.run_sync)

    def __init__(self, file: IO[bytes], *, max_buffer: int = RECORDER_MAX_BUFFER) -> None:
        self._file = file
        self.max_buffer = max_buffer
        self._pending: list[_Item] = []
        self._size = 0  # frames and responses in `_pending`
        self._wake = trio.Event()
        self._closed = False
        #: Frames and responses (and state changes) written and flushed.
        self.written = 0
        #: Items not recorded because the writer fell behind (the recording stopped then).
        self.dropped = 0

    @property
    def overflowed(self) -> bool:
        """True once the writer fell behind and the recording stopped (the capture is
        incomplete from that point)."""
        return self.dropped > 0

    # ---- taps (synchronous, never block) --------------------------------------------------

    def frames(self, t: int, venue: str, conn: str, frames: Sequence[str | bytes]) -> None:
        """One batch of frames a reader of connection ``conn`` received at local ms ``t``."""
        self._add(("ws", t, venue, conn, frames), len(frames))

    def response(self, t: int, venue: str, target: str, status: int, text: str) -> None:
        """A REST response to ``target`` (``path?query``) received at local ms ``t``."""
        self._add(("rest", t, venue, target, status, text), 1)

    def state(self, t: int, venue: str, event: StateChange) -> None:
        """A connection state change at local ms ``t``."""
        self._add(("state", t, venue, event), 1)

    def _add(self, item: _Item, size: int) -> None:
        if self._closed or self.dropped:
            if self.dropped:
                self.dropped += size
            return
        if self._size + size > self.max_buffer:
            self.dropped += size
            log.error(
                "capture writer fell more than %d items behind: recording stopped, the capture "
                "ends here",
                self.max_buffer,
            )
            return
        self._pending.append(item)
        self._size += size
        self._wake.set()

    # ---- the writer -----------------------------------------------------------------------

    def close(self) -> None:
        """No more items: `run` writes what is buffered, flushes and returns."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Write every buffered item, batch by batch, until `close`d and drained."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._pending, self._size = self._pending, [], 0
            if batch:
                self.written += await self.run_sync(_write_batch, self._file, batch)
            if self._closed and not self._pending:
                return


def _write_batch(file: IO[bytes], batch: list[_Item]) -> int:
    """Encode ``batch`` as capture lines, write and flush them; return the lines written."""
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    lines: list[bytes] = []
    for item in batch:
        kind = item[0]
        if kind == "ws":
            _, t, venue, conn, frames = item
            for frame in frames:
                text = frame if isinstance(frame, str) else _text(frame)
                lines.append(
                    dumps(
                        {"t": t, "venue": venue, "kind": "ws", "conn": conn, "data": text},
                        option=newline,
                    )
                )
        elif kind == "rest":
            _, t, venue, target, status, text = item
            record = {"t": t, "venue": venue, "kind": "rest", "request": target}
            record.update(status=status, data=text)
            lines.append(dumps(record, option=newline))
        else:
            _, t, venue, event = item
            lines.append(
                dumps(
                    {
                        "t": t,
                        "venue": venue,
                        "kind": "state",
                        "conn": event.connection,
                        "state": event.state,
                        "previous": event.previous,
                        "time": event.time,
                        "streams": list(event.streams),
                        "retry": event.retry,
                    },
                    option=newline,
                )
            )
    file.write(b"".join(lines))
    file.flush()
    return len(lines)


def _text(frame: bytes) -> str:
    # Binary frames are recorded as text (the format has no bytes); venues that send
    # binary frames send UTF-8 JSON. Anything else is kept readable rather than dropped.
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        return frame.decode("utf-8", errors="replace")


@asynccontextmanager
async def open_recorder(
    path: str, *, max_buffer: int = RECORDER_MAX_BUFFER
) -> AsyncIterator[Recorder]:
    """A running `Recorder` writing ``path`` (created, or truncated) inside ``async with``;
    leaving the block writes what is buffered, flushes and closes the file. Open it around
    ``open_feed(..., recorder=...)`` so that the feed stops before the recording does."""
    run_sync = Recorder.run_sync
    file: IO[bytes] = await run_sync(open, path, "wb")
    try:
        recorder = Recorder(file, max_buffer=max_buffer)
        # Shielded: a cancellation around the feed (Ctrl+C, a timeout) must not cut the
        # writer off before the frames of the feed's last moments are on disk.
        scope = trio.CancelScope(shield=True)
        done = trio.Event()

        async def write() -> None:
            try:
                with scope:
                    await recorder.run()
            finally:
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, name=f"recorder {path}")
            try:
                yield recorder
            finally:
                recorder.close()
                with trio.move_on_after(DRAIN_TIMEOUT, shield=True):
                    await done.wait()
                if not done.is_set():
                    log.error(
                        "capture %s: not written within %.0f s of shutdown", path, DRAIN_TIMEOUT
                    )
                scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await run_sync(file.close)
