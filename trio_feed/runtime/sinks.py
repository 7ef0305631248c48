"""Sinks: where events go besides ``feed.events()`` consumers.

A sink is a consumer with its own subscription that writes in batches. Writes run in a
worker thread, so a slow disk or a stalled pipe never blocks the event loop (and with it
the connection readers); the subscription's bound decides how far a sink may fall behind
before it fails with `SlowConsumer`, loudly, rather than growing memory without bound.

At shutdown the feed stops its connections first, then closes the subscriptions; each sink
drains what is buffered, flushes and closes its file.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

import trio

from ..codec import json_line
from ..config import SinkConfig
from ..errors import ConfigError
from .fanout import Subscription

__all__ = ["SINK_MAX_BUFFER", "JsonlSink", "Sink", "check_sinks", "make_sink", "write_jsonl"]

log = logging.getLogger("trio_feed.sinks")

#: Buffer of a sink's subscription: generous, since disks and pipes stall briefly.
SINK_MAX_BUFFER = 200_000


class Sink:
    """Base class: ``run`` consumes a subscription until it is closed and drained."""

    name: str

    async def run(self, sub: Subscription) -> None:
        raise NotImplementedError


class JsonlSink(Sink):
    """JSON lines to a file (appended) or to stdout (``path = "-"``), flushed per batch."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"jsonl:{path}"

    async def run(self, sub: Subscription) -> None:
        if self.path == "-":
            await write_jsonl(sub, sys.stdout.buffer)
            return
        file: IO[bytes] = await trio.to_thread.run_sync(open, self.path, "ab")
        try:
            await write_jsonl(sub, file)
        finally:
            await trio.to_thread.run_sync(file.close)


async def write_jsonl(sub: Subscription, file: IO[bytes]) -> None:
    """Write every event of ``sub`` to ``file`` as JSON lines until it is closed and drained.

    Each batch (everything buffered when the writer wakes) is written and flushed in a
    worker thread, so each line is complete and flushed before the writer waits again.
    """
    while True:
        try:
            batch = await sub.receive_batch()
        except StopAsyncIteration:
            return
        data = b"".join([json_line(event) for event in batch])
        await trio.to_thread.run_sync(_write_flush, file, data)


def _write_flush(file: IO[bytes], data: bytes) -> None:
    file.write(data)
    file.flush()


def check_sinks(sinks: tuple[SinkConfig, ...]) -> None:
    """Raise `ConfigError` for sink kinds this release cannot run."""
    problems = [
        f"sinks[{i}].kind: 'sqlite' sinks are not available in this release; use kind = \"jsonl\""
        for i, sink in enumerate(sinks)
        if sink.kind == "sqlite"
    ]
    if problems:
        raise ConfigError(problems)


def make_sink(config: SinkConfig) -> Sink:
    """The sink for one ``[[sinks]]`` table."""
    if config.kind == "jsonl":
        return JsonlSink(config.path)
    raise ConfigError(f"sinks: unsupported kind {config.kind!r}")
