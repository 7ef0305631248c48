"""The ``trio-feed`` command line.

Logs go to stderr only; stdout carries JSON lines (``--jsonl -``) or the live view. Bad
input exits 2 with one line per problem and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence

import trio
import trio.testing
from rich.console import Console

from .config import FeedConfig, config_from_dict, load_config
from .errors import ConfigError, SlowConsumer
from .plan import plan_feed
from .runtime.fanout import Subscription
from .runtime.feed import Feed, open_feed
from .runtime.recording import Recorder, open_recorder
from .runtime.replay import Capture, CaptureError, open_replay
from .runtime.sinks import SINK_MAX_BUFFER, JsonlSink, check_sinks, run_inline
from .venues import get_adapter, known_venues

__all__ = ["main"]

log = logging.getLogger("trio_feed.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-feed",
        description="Gap-free, reconciled crypto-exchange market data, supervised with Trio.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the feed until SIGINT/SIGTERM or --duration")
    run.add_argument("--config", required=True, metavar="PATH", help="TOML config file")
    run.add_argument(
        "--jsonl",
        metavar="PATH",
        help="write events as JSON lines ('-' = stdout; the default when stdout is not a terminal)",
    )
    run.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after this long")

    check = sub.add_parser("check-config", help="validate a config and show its connections")
    check.add_argument("path", metavar="PATH", nargs="?", help="TOML config file")
    check.add_argument(
        "--list-venues", action="store_true", help="list the known venues and their channels"
    )

    record = sub.add_parser(
        "record", help="run the feed and write every frame and REST response to a capture"
    )
    record.add_argument("--config", required=True, metavar="PATH", help="TOML config file")
    record.add_argument(
        "--out", required=True, metavar="FILE", help="capture file (JSON lines; overwritten)"
    )
    record.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after this long")

    replay = sub.add_parser(
        "replay", help="feed a capture through the feed offline and emit its events"
    )
    replay.add_argument("--config", required=True, metavar="PATH", help="TOML config file")
    replay.add_argument(
        "--in", dest="capture", required=True, metavar="FILE", help="capture file to replay"
    )
    replay.add_argument(
        "--jsonl", metavar="PATH", default="-", help="write events as JSON lines ('-' = stdout)"
    )

    demo = sub.add_parser("demo", help="run against the built-in exchange simulator (offline)")
    demo.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after this long")
    demo.add_argument(
        "--jsonl",
        metavar="PATH",
        help="write events as JSON lines ('-' = stdout; the default when stdout is not a terminal)",
    )
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated market")
    demo.add_argument(
        "--sqlite",
        metavar="PATH",
        help="also store into this SQLite file (never the default data/feed.sqlite: "
        "simulated prices do not belong beside real ones)",
    )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-feed`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "run":
            config = load_config(args.config)
            plan_feed(config)  # fail fast, before any network
            check_sinks(config.sinks)
            return trio.run(_run, config, _default_jsonl(args.jsonl), args.duration)
        if args.command == "record":
            config = load_config(args.config)
            plan_feed(config)
            check_sinks(config.sinks)
            try:
                open(args.out, "wb").close()  # fail fast, before any network
            except OSError as exc:
                raise ConfigError(f"--out: cannot write {args.out!r}: {exc.strerror}") from None
            return trio.run(_record, config, args.out, args.duration)
        if args.command == "replay":
            config = load_config(args.config)
            plan_feed(config)
            capture = Capture.from_file(args.capture)  # checks every line first
            return trio.run(
                _replay,
                config,
                capture,
                args.jsonl,
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
        if args.command == "demo":
            return trio.run(_demo, args)
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_USAGE
    except CaptureError as exc:
        print(f"trio-feed: invalid capture: {exc}", file=sys.stderr)
        return EXIT_USAGE
    raise AssertionError(args.command)  # pragma: no cover - argparse guarantees a command


#: The terminal console on stderr, shared by the live view and the log handler so that log
#: lines print above the live table instead of through it. None when stderr is no terminal.
_tty_console: Console | None = None


def _setup_logging(level: str) -> None:
    global _tty_console
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        _tty_console = Console(stderr=True)
        handler = RichHandler(console=_tty_console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))
    # httpx logs every request at INFO; our own REST client reports what matters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


def _print_problems(exc: ConfigError) -> None:
    print("trio-feed: invalid configuration:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _default_jsonl(jsonl: str | None) -> str | None:
    """``--jsonl`` as given; without it, ``"-"`` when stdout is not a terminal: piped or
    redirected output gets the events as JSON lines, a terminal gets the live view."""
    if jsonl is None and not sys.stdout.isatty():
        return "-"
    return jsonl


# ---- check-config -------------------------------------------------------------------------


def _check_config(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.list_venues:
        for name in known_venues():
            adapter = get_adapter(name)
            print(
                f"{name}  (ws {adapter.default_ws_url}, rest {adapter.default_rest_url})", file=out
            )
            for info in adapter.channels():
                extra = f": {', '.join(info.intervals)}" if info.intervals else ""
                print(f"  {info.pattern:<28} {info.description}{extra}", file=out)
        if args.path is None:
            return EXIT_OK
    if args.path is None:
        print("trio-feed check-config: a config PATH is required", file=sys.stderr)
        return EXIT_USAGE
    config = load_config(args.path)
    plans = plan_feed(config)
    print(f"{args.path}: valid", file=out)
    for plan in plans:
        n = sum(len(c.streams) for c in plan.connections)
        print(
            f"{plan.adapter.name}: {n} streams on {len(plan.connections)} connection(s)", file=out
        )
        for conn in plan.connections:
            url = plan.adapter.connect_url(plan.config.ws_url, conn.route, conn.streams)
            base = url.split("?", 1)[0]
            print(f"  {conn.id}  {base}  ({len(conn.streams)} streams)", file=out)
            for spec in conn.streams:
                print(f"    {spec.name}", file=out)
    return EXIT_OK


# ---- run ----------------------------------------------------------------------------------


class _RunOutcome:
    """What the output side saw, for the exit code."""

    def __init__(self, stopper: trio.CancelScope) -> None:
        self.stopper = stopper
        self.slow: list[SlowConsumer] = []


async def _run(
    config: FeedConfig,
    jsonl: str | None,
    duration: float | None,
    recorder: Recorder | None = None,
) -> int:
    """Run the feed until a signal, ``duration``, or the output closing; flush output;
    return the exit code."""
    # The live view draws on stderr (it is not data): on a terminal, unless JSON lines go to
    # that same terminal.
    show_view = _tty_console is not None and not (jsonl == "-" and sys.stdout.isatty())
    stopper = trio.CancelScope()
    if duration is not None:
        stopper.deadline = trio.current_time() + duration
    outcome = _RunOutcome(stopper)
    async with trio.open_nursery() as outer, open_feed(config, recorder=recorder) as feed:
        if jsonl is not None:
            sub = feed.events(max_buffer=SINK_MAX_BUFFER)
            outer.start_soon(_write_jsonl_task, sub, jsonl, outcome, name="jsonl writer")
        async with trio.open_nursery() as inner:
            if show_view:
                inner.start_soon(_view_task, feed)
            with stopper:
                await _wait_for_stop_signal()
            inner.cancel_scope.cancel()
        log.info("stopping")
        # Leaving open_feed closed the subscription; the writer drains it and returns.
    return EXIT_FAILURE if outcome.slow else EXIT_OK


async def _wait_for_stop_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            return


async def _view_task(feed: Feed) -> None:
    from .view import live_view

    assert _tty_console is not None
    await live_view(feed, _tty_console, min_quality=feed.config.monitoring.min_quality)


async def _write_jsonl_task(sub: Subscription, path: str, outcome: _RunOutcome) -> None:
    try:
        await JsonlSink(path).run(sub)
    except SlowConsumer as exc:
        outcome.slow.append(exc)
        log.error("output could not keep up with the feed: %s", exc)
    except BrokenPipeError:
        # The reader of our output went away (`trio-feed run --jsonl - | head`): stop
        # quietly, as Unix tools do, and keep Python from complaining at exit.
        log.info("output closed by its reader; stopping")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        outcome.stopper.cancel()


# ---- record and replay --------------------------------------------------------------------


async def _record(config: FeedConfig, out: str, duration: float | None) -> int:
    """`_run` with a recorder: events go to the config's sinks (and the live view), every
    frame and REST response to ``out``."""
    async with open_recorder(out) as recorder:
        code = await _run(config, None, duration, recorder)
    log.info("capture %s: %d records", out, recorder.written)
    if recorder.overflowed:
        log.error("capture %s is incomplete: %d items were not recorded", out, recorder.dropped)
        return EXIT_FAILURE
    return code


class _InlineJsonlSink(JsonlSink):
    # Replay runs in virtual time: writing on the event loop keeps the writer in step with
    # the replay (a worker thread would let events pile up while virtual time races on).
    run_sync = staticmethod(run_inline)


async def _replay(config: FeedConfig, capture: Capture, jsonl: str) -> int:
    async with open_replay(config, capture) as replay:
        sub = replay.feed.events(max_buffer=SINK_MAX_BUFFER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_InlineJsonlSink(jsonl).run, sub, name="jsonl writer")
            stats = await replay.run()
            sub.close()  # the writer drains what is buffered and returns
    log.info(
        "replayed %d frames, %d REST responses and %d state changes from %s",
        stats.frames,
        stats.responses,
        stats.states,
        capture.source,
    )
    return EXIT_OK


# ---- demo ---------------------------------------------------------------------------------


async def _demo(args: argparse.Namespace) -> int:
    from .testing import FakeExchange

    jsonl = _default_jsonl(args.jsonl)
    symbols = ("BTCUSDT", "ETHUSDT")
    # The simulated market starts now, so exchange time and local time agree.
    start_ms = time.time_ns() // 1_000_000
    async with (
        FakeExchange(symbols=symbols, seed=args.seed, start_time_ms=start_ms) as fake,
        trio.open_nursery() as nursery,
    ):
        ws_url, rest_url = await nursery.start(fake.serve)
        log.info("simulated exchange on %s (REST %s)", ws_url, rest_url)
        config = config_from_dict(
            {
                "venues": [
                    {
                        "exchange": "binance-usdm",
                        "ws_url": ws_url,
                        "rest_url": rest_url,
                        "symbols": list(symbols),
                        "channels": ["kline_1m", "aggTrade", "markPrice", "bookTicker", "depth"],
                    }
                ],
                "reconnect": {"base_delay": 0.5, "max_delay": 5.0, "max_retries": 0},
                # Simulated prices must never land in a real store: none unless asked for.
                "sinks": [{"kind": "sqlite", "path": args.sqlite}] if args.sqlite else [],
            },
            source="demo",
            environ={},
        )
        code = await _run(config, jsonl, args.duration)
        nursery.cancel_scope.cancel()
    return code
