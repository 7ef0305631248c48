"""Live operations end to end on the fake exchange, in virtual time: staleness and data
quality, subscription changes while running, new listings, the exchange's limits, rotation
without a gap, serverShutdown, health and a bounded shutdown."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import orjson
import pytest
import trio
import trio.lowlevel
from trio_feed import Feed, QualityChange
from trio_feed.events import BookTicker, Event, Kline, MarkPrice, StateChange, Trade
from trio_feed.runtime.connection import SubscriptionRejected
from trio_feed.runtime.monitoring import health
from trio_feed.testing import FakeExchange

from support import assert_klines_complete, assert_trades_complete, feed_on, make_config

MARKET = "binance-usdm/market/0"


class Recorder:
    """Every event of one subscription, with the virtual time it arrived."""

    def __init__(self, feed: Feed) -> None:
        self.sub = feed.events(max_buffer=10_000_000)
        self.events: list[Event] = []
        self.times: list[float] = []

    async def run(self) -> None:
        async for event in self.sub:
            self.events.append(event)
            self.times.append(trio.current_time())

    def of(self, cls: type[Any], symbol: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, cls) and (symbol is None or getattr(e, "symbol", None) == symbol)
        ]

    def quality(self, symbol: str) -> list[QualityChange]:
        return self.of(QualityChange, symbol)

    def states(self, state: str | None = None) -> list[StateChange]:
        return [e for e in self.of(StateChange) if state is None or e.state == state]


async def run_with(feed: Feed, recorder: Recorder, nursery: trio.Nursery) -> None:
    nursery.start_soon(recorder.run)
    await trio.lowlevel.checkpoint()


def subscribes(fake: FakeExchange, method: str) -> list[list[str]]:
    """The params of every ``method`` request the fake received, per request."""
    out = []
    for record in fake.connections:
        for text in record.control_messages:
            message = orjson.loads(text)
            if message.get("method") == method:
                out.append(message["params"])
    return out


def no_duplicates(events: list[Event]) -> None:
    """No market event was delivered twice (rotations de-duplicate their overlap)."""
    keys: Counter[Any] = Counter()
    for e in events:
        if isinstance(e, Trade):
            keys[("trade", e.symbol, e.id, e.source)] += 1
        elif isinstance(e, Kline) and e.closed:
            # (An open kline is re-sent unchanged while nobody trades: repeats are real.)
            keys[("kline", e.symbol, e.interval, e.open_time, e.revision)] += 1
        elif isinstance(e, BookTicker):
            keys[("ticker", e.symbol, e.update_id)] += 1
        elif isinstance(e, MarkPrice):
            keys[("mark", e.symbol, e.time)] += 1
    doubled = [k for k, n in keys.items() if n > 1]
    assert not doubled, f"{len(doubled)} events delivered twice, e.g. {doubled[:3]}"


HEARTBEAT = {"heartbeat": {"check_interval": 30, "timeout": 60}}


# ---- staleness and quality -----------------------------------------------------------------


async def test_silent_streams_lower_quality_by_the_table_and_it_recovers(autojump_clock):
    channels = ("aggTrade", "kline_1m", "bookTicker", "markPrice")
    symbols = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    config = make_config(symbols=symbols, channels=channels, **HEARTBEAT)
    silenced = {
        "AAAUSDT": ["kline_1m"],
        "BBBUSDT": ["kline_1m", "markPrice@1s"],
        "CCCUSDT": ["kline_1m", "markPrice@1s", "bookTicker"],
    }
    expected = {"AAAUSDT": 0.9, "BBBUSDT": 0.8, "CCCUSDT": 0.7}  # 1, 2, 3 of 4 streams
    async with FakeExchange(symbols=symbols, seed=3) as fake, feed_on(fake, config) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            await run_with(feed, recorder, nursery)
            await trio.sleep(120)
            assert all(feed.quality(s) == 1.0 for s in symbols)
            for symbol, names in silenced.items():
                for name in names:
                    fake.silence(f"{symbol.lower()}@{name}")
            with trio.fail_after(200):
                while any(feed.quality(s) > expected[s] for s in symbols):
                    await trio.sleep(0.5)
            found_at = trio.current_time()
            for symbol in symbols:
                assert feed.quality(symbol) == pytest.approx(expected[symbol])
                row = next(r for r in feed.status().symbols if r.symbol == symbol)
                assert len(row.missing_streams) == len(silenced[symbol])
            # The streams deliver again (the re-subscription went out at the same check):
            # recovery is gradual, one step per heartbeat period, up to 1.0.
            for symbol, names in silenced.items():
                for name in names:
                    fake.silence(f"{symbol.lower()}@{name}", on=False)
            await trio.sleep(75)  # back at the next check, a step at the next tick
            assert 0.7 < feed.quality("CCCUSDT") < 1.0
            await trio.sleep(600)
            nursery.cancel_scope.cancel()
        for symbol in symbols:
            assert feed.quality(symbol) == 1.0
            changes = recorder.quality(symbol)
            scores = [q.score for q in changes]
            assert min(scores) == pytest.approx(expected[symbol])
            low = scores.index(min(scores))
            rising = scores[low:]
            assert rising == sorted(rising) and len(rising) >= 3, scores  # step by step
            assert scores[-1] == 1.0
            assert all(q.reason and q.time > 1_767_225_600_000 for q in changes)
            assert "stale" in changes[low].reason or "missing" in changes[low].reason
        assert found_at < 120 + 60 + 2 * 30 + 1  # the timeout, then at most two checks
        assert feed.status().symbols[0].missing_streams == ()
        # Re-subscribing healed every stream: the connections never restarted.
        assert not recorder.states("LOST")


async def test_all_streams_missing_scores_point_two(autojump_clock):
    config = make_config(symbols=("BTCUSDT",), channels=("aggTrade", "kline_1m"), **HEARTBEAT)
    async with FakeExchange(symbols=["BTCUSDT"], seed=4) as fake, feed_on(fake, config) as feed:
        await trio.sleep(90)
        fake.silence("btcusdt@kline_1m")
        fake.silence("btcusdt@aggTrade")
        with trio.fail_after(200):
            while feed.quality("BTCUSDT") > 0.2:
                await trio.sleep(1)
        assert feed.quality("BTCUSDT") == pytest.approx(0.2)
        status = feed.status()
        assert set(status.symbols[0].missing_streams) == {"btcusdt@kline_1m", "btcusdt@aggTrade"}
        ok, body = health(status, 0.5)
        assert not ok
        assert any("BTCUSDT" in p for p in body["problems"])


async def test_quiet_but_healthy_illiquid_stream_raises_no_alarm(autojump_clock):
    # QUIETUSDT trades about once every 100 s; its kline stream ticks all the time.
    fake = FakeExchange(
        symbols=["BTCUSDT", "QUIETUSDT"], seed=5, trade_rate={"BTCUSDT": 2.0, "QUIETUSDT": 0.01}
    )
    config = make_config(
        symbols=("BTCUSDT", "QUIETUSDT"), channels=("aggTrade", "kline_1m"), **HEARTBEAT
    )
    async with fake, feed_on(fake, config) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            await run_with(feed, recorder, nursery)
            await trio.sleep(2 * 3600)
            nursery.cancel_scope.cancel()
        assert len(recorder.of(Trade, "QUIETUSDT")) > 20  # it did trade, rarely
        assert not recorder.quality("QUIETUSDT")
        assert feed.quality("QUIETUSDT") == 1.0
        assert subscribes(fake, "UNSUBSCRIBE") == []
        assert not recorder.states("LOST")


async def test_a_broken_trade_stream_is_caught_despite_a_quiet_market(autojump_clock):
    # The kline stream shows trades that the aggTrade stream never delivers.
    fake = FakeExchange(symbols=["BTCUSDT"], seed=6, trade_rate={"BTCUSDT": 0.2})
    config = make_config(symbols=("BTCUSDT",), channels=("aggTrade", "kline_1m"), **HEARTBEAT)
    async with fake, feed_on(fake, config) as feed:
        await trio.sleep(300)
        fake.silence("btcusdt@aggTrade", resubscribe_heals=True)
        with trio.fail_after(400):
            while feed.quality("BTCUSDT") == 1.0:
                await trio.sleep(1)
        assert feed.quality("BTCUSDT") == pytest.approx(0.9)
        await trio.sleep(600)
        assert subscribes(fake, "UNSUBSCRIBE") == [["btcusdt@aggTrade"]]
        assert subscribes(fake, "SUBSCRIBE") == [["btcusdt@aggTrade"]]
        assert feed.quality("BTCUSDT") == 1.0  # delivering again after the re-subscribe
        assert feed.status().venues[0].trades_backfilled > 0  # the silence came from REST


async def test_stale_after_resubscribe_restarts_the_connection_and_loses_nothing(autojump_clock):
    config = make_config(symbols=("BTCUSDT",), channels=("aggTrade", "kline_1m"), **HEARTBEAT)
    async with FakeExchange(symbols=["BTCUSDT"], seed=7) as fake, feed_on(fake, config) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            await run_with(feed, recorder, nursery)
            await trio.sleep(100)
            first = fake.live_connections[0]
            fake.stall_connection_streams(first.id)
            with trio.fail_after(600):
                while first.is_open:
                    await trio.sleep(1)
            await trio.sleep(900)
            nursery.cancel_scope.cancel()
        lost = recorder.states("LOST")
        assert len(lost) == 1
        reasons = [c.last_error for c in feed.status().connections]
        assert any("still silent after a re-subscribe" in (r or "") for r in reasons)
        # Re-subscribed once on the stalled connection before giving it up.
        assert sorted(itertools.chain(*subscribes(fake, "UNSUBSCRIBE"))) == [
            "btcusdt@aggTrade",
            "btcusdt@kline_1m",
        ]
        assert feed.quality("BTCUSDT") == 1.0
        assert_trades_complete(recorder.of(Trade, "BTCUSDT"), fake, "BTCUSDT")
        assert_klines_complete(recorder.of(Kline, "BTCUSDT"), fake, "BTCUSDT", "1m")


# ---- subscription changes ----------------------------------------------------------------


async def test_update_subscription_while_subscribed_touches_only_what_changed(autojump_clock):
    config = make_config(symbols=("BTCUSDT", "ETHUSDT"), channels=("aggTrade", "kline_1m"))
    async with FakeExchange(seed=8) as fake, feed_on(fake, config) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            await run_with(feed, recorder, nursery)
            await trio.sleep(30)
            await feed.update_subscription(
                symbols=["BTCUSDT", "ETHUSDT"], channels=["aggTrade", "kline_5m"]
            )
            assert feed.subscriptions() == {
                "BTCUSDT": ("aggTrade", "kline_5m"),
                "ETHUSDT": ("aggTrade", "kline_5m"),
            }
            await trio.sleep(900)
            nursery.cancel_scope.cancel()
        assert len(fake.connections) == 1  # no reconnect
        assert subscribes(fake, "SUBSCRIBE") == [["btcusdt@kline_5m", "ethusdt@kline_5m"]]
        assert subscribes(fake, "UNSUBSCRIBE") == [["btcusdt@kline_1m", "ethusdt@kline_1m"]]
        conn = feed.status().connections[0]
        assert set(conn.streams) == {
            "btcusdt@aggTrade",
            "ethusdt@aggTrade",
            "btcusdt@kline_5m",
            "ethusdt@kline_5m",
        }
        assert set(fake.live_connections[0].streams) == set(conn.streams)
        assert_klines_complete(recorder.of(Kline, "BTCUSDT"), fake, "BTCUSDT", "5m")
        assert_trades_complete(recorder.of(Trade, "ETHUSDT"), fake, "ETHUSDT")
        late = [
            k
            for k, t in zip(recorder.events, recorder.times, strict=True)
            if isinstance(k, Kline) and k.interval == "1m" and t > 31
        ]
        assert not late  # the removed stream is gone


async def test_update_subscription_during_reconnects(autojump_clock):
    config = make_config(
        symbols=("BTCUSDT",),
        channels=("aggTrade", "kline_1m"),
        reconnect={"base_delay": 5.0, "max_delay": 20.0, "max_retries": 0},
    )
    async with FakeExchange(seed=9) as fake, feed_on(fake, config) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            await run_with(feed, recorder, nursery)
            await trio.sleep(30)
            fake.refuse_next(3)
            fake.drop_connections()
            await trio.sleep(1)
            assert feed.status().connections[0].state in ("RECONNECTING", "CONNECTING")
            await feed.subscribe(["ETHUSDT"], ["aggTrade", "kline_1m"])
            await feed.unsubscribe(["BTCUSDT"], ["kline_1m"])
            await trio.sleep(600)
            nursery.cancel_scope.cancel()
        live = fake.live_connections
        assert len(live) == 1
        assert set(live[0].streams) == {"btcusdt@aggTrade", "ethusdt@aggTrade", "ethusdt@kline_1m"}
        assert feed.status().connections[0].state == "SUBSCRIBED"
        assert_trades_complete(recorder.of(Trade, "BTCUSDT"), fake, "BTCUSDT")
        assert_trades_complete(recorder.of(Trade, "ETHUSDT"), fake, "ETHUSDT")
        assert_klines_complete(recorder.of(Kline, "ETHUSDT"), fake, "ETHUSDT", "1m")


async def test_subscription_changes_open_and_close_connections(autojump_clock):
    config = make_config(
        symbols=("BTCUSDT",),
        channels=("aggTrade",),
        connection_pool={"max_connections": 3, "max_streams_per_connection": 2},
    )
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    async with FakeExchange(symbols=symbols, seed=10) as fake, feed_on(fake, config) as feed:
        await trio.sleep(10)
        await feed.subscribe(["ETHUSDT", "SOLUSDT"], ["aggTrade"])
        await trio.sleep(10)
        ids = [c.id for c in feed.status().connections]
        assert len(ids) == 2
        assert len(fake.live_connections) == 2
        with pytest.raises(Exception, match="max_connections"):
            await feed.subscribe(["XRPUSDT"], ["aggTrade", "kline_1m", "kline_5m", "bookTicker"])
        assert "XRPUSDT" not in feed.subscriptions()  # all or nothing
        await feed.unsubscribe(["SOLUSDT"])
        await trio.sleep(10)
        assert len(fake.live_connections) == 1
        assert [c.id for c in feed.status().connections] == ids[:1]
        states = [c.state for c in feed.status().connections]
        assert states == ["SUBSCRIBED"]


async def test_a_refused_stream_is_left_out_and_the_rest_untouched(autojump_clock):
    config = make_config(symbols=("BTCUSDT",), channels=("aggTrade",))
    # This venue holds at most two streams per connection, more than the config knows.
    async with FakeExchange(seed=11, max_streams_per_connection=2) as fake:
        async with feed_on(fake, config) as feed:
            await trio.sleep(10)
            with pytest.raises(SubscriptionRejected, match="too many streams") as caught:
                await feed.subscribe(["ETHUSDT"], ["aggTrade", "kline_1m"])
            assert set(caught.value.streams) == {"ethusdt@aggTrade", "ethusdt@kline_1m"}
            assert feed.subscriptions() == {"BTCUSDT": ("aggTrade",)}
            await trio.sleep(10)
            status = feed.status()
            before = len(feed.trades("BTCUSDT"))
            await trio.sleep(10)
            assert len(feed.trades("BTCUSDT")) > before  # the rest untouched
        assert len(fake.connections) == 1
        assert status.connections[0].state == "SUBSCRIBED"
        assert status.connections[0].streams == ("btcusdt@aggTrade",)
        assert [s.symbol for s in status.symbols] == ["BTCUSDT"]


async def test_a_bad_channel_is_a_config_error_and_changes_nothing(autojump_clock):
    from trio_feed.errors import ConfigError

    config = make_config(symbols=("BTCUSDT",), channels=("aggTrade",))
    async with FakeExchange(seed=12) as fake, feed_on(fake, config) as feed:
        await trio.sleep(5)
        with pytest.raises(ConfigError, match="kline_2x"):
            await feed.subscribe(["ETHUSDT"], ["kline_2x"])
        assert feed.subscriptions() == {"BTCUSDT": ("aggTrade",)}
        assert subscribes(fake, "SUBSCRIBE") == []


async def test_new_listings_are_subscribed(autojump_clock):
    config = make_config(
        symbols=("BTCUSDT",),
        channels=("aggTrade",),
        new_listings={"enabled": True, "poll_interval": 60},
    )
    async with FakeExchange(symbols=["BTCUSDT"], seed=13) as fake, feed_on(fake, config) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            await run_with(feed, recorder, nursery)
            await trio.sleep(150)
            assert list(feed.subscriptions()) == ["BTCUSDT"]
            fake.list_symbol("NEWUSDT", trade_rate=1.0)
            await trio.sleep(75)
            assert feed.subscriptions()["NEWUSDT"] == ("kline_1m", "kline_5m", "kline_15m")
            await trio.sleep(1800)
            nursery.cancel_scope.cancel()
        for interval in ("1m", "5m", "15m"):
            assert_klines_complete(recorder.of(Kline, "NEWUSDT"), fake, "NEWUSDT", interval)
        assert not recorder.of(Trade, "NEWUSDT")  # only the configured channels
        assert feed.quality("NEWUSDT") == 1.0


# ---- the exchange's limits ---------------------------------------------------------------


async def test_a_burst_of_subscription_changes_never_breaks_the_message_limit(autojump_clock):
    symbols = [f"S{i:02d}USDT" for i in range(40)]
    config = make_config(
        symbols=symbols[:1], channels=("aggTrade",), ping={"interval": 1.3, "timeout": 5}
    )
    async with FakeExchange(symbols=symbols, seed=14) as fake, feed_on(fake, config) as feed:
        await trio.sleep(5)
        async with trio.open_nursery() as nursery:
            for symbol in symbols[1:]:
                nursery.start_soon(feed.subscribe, [symbol], ["aggTrade", "kline_1m"])
        for symbol in symbols[1:20]:
            nursery_symbols = [symbol]
            await feed.unsubscribe(nursery_symbols, ["kline_1m"])
        await trio.sleep(30)
        assert fake.incoming_limit_violations == 0
        assert all(r.max_messages_in_window <= 10 for r in fake.connections)
        assert max(r.max_messages_in_window for r in fake.connections) >= 6  # it was a burst
        assert len(fake.connections) == 1
        live = set(fake.live_connections[0].streams)
        want = {s.lower() + "@aggTrade" for s in symbols}
        want |= {s.lower() + "@kline_1m" for s in symbols[20:]}
        assert live == want, (sorted(live - want), sorted(want - live))


async def test_connection_attempts_stay_within_the_per_ip_limit(autojump_clock):
    config = make_config(
        symbols=[f"S{i:02d}USDT" for i in range(10)],
        channels=("aggTrade",),
        connection_pool={"max_connections": 10, "max_streams_per_connection": 1},
        reconnect={"base_delay": 0.05, "max_delay": 0.1, "max_retries": 0},
    )
    fake = FakeExchange(
        symbols=[f"S{i:02d}USDT" for i in range(10)], seed=15, max_attempts_per_window=(300, 300.0)
    )
    async with fake, feed_on(fake, config):
        fake.refuse_next(100_000)
        await trio.sleep(1200)
    times = fake.attempt_times
    assert len(times) > 600  # the storm went on for the whole run, throttled
    for i in range(len(times) - 300):
        assert times[i + 300] - times[i] >= 300.0 - 1e-6
    assert fake.attempt_limit_violations == 0


# ---- rotation ----------------------------------------------------------------------------


async def test_rotation_every_few_hours_for_three_days_loses_and_doubles_nothing(autojump_clock):
    config = make_config(
        symbols=("BTCUSDT",),
        channels=("aggTrade", "kline_1m", "bookTicker"),
        connection_pool={"rotate_after": 3 * 3600 + 17.0},
    )
    # A coarse market tick keeps three virtual days affordable; trades still come about
    # every two seconds, so every switch has trades in flight on both sockets.
    fake = FakeExchange(
        symbols=["BTCUSDT"], seed=16, trade_rate=0.5, tick=10.0, kline_every=1, sent_history=None
    )
    async with fake, feed_on(fake, config) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            await run_with(feed, recorder, nursery)
            await trio.sleep(3 * 86400)
            nursery.cancel_scope.cancel()
        status = feed.status()
    for conn in status.connections:
        assert conn.rotations == 23, conn  # every 3 h, and the venue's 24 h limit never hit
        assert conn.reconnects == 0
    assert not recorder.states("LOST")  # make-before-break: the state never flipped
    assert not [r for r in fake.connections if r.close_reason == "lifetime"]
    trades = recorder.of(Trade, "BTCUSDT")
    assert len(trades) > 100_000
    assert_trades_complete(trades, fake, "BTCUSDT")
    assert all(t.source == "ws" for t in trades)  # no switch left a gap for REST to fill
    klines = assert_klines_complete(recorder.of(Kline, "BTCUSDT"), fake, "BTCUSDT", "1m")
    assert len(klines) >= 3 * 1440 - 2
    # Both sockets were sent the overlap of each rotation; each update arrived once.
    sent = sorted({p["u"] for p in fake.sent("btcusdt@bookTicker")})
    got = [b.update_id for b in recorder.of(BookTicker, "BTCUSDT")]
    assert got == [u for u in sent if got[0] <= u <= got[-1]]
    no_duplicates(recorder.events)
    assert status.venues[0].klines_backfilled == 0
    assert status.venues[0].trades_backfilled == 0


async def test_server_shutdown_rotates_make_before_break(autojump_clock):
    config = make_config(symbols=("BTCUSDT",), channels=("aggTrade", "kline_1m", "bookTicker"))
    fake = FakeExchange(seed=17, sent_history=None)
    async with fake, feed_on(fake, config) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            await run_with(feed, recorder, nursery)
            await trio.sleep(100)
            assert fake.announce_shutdown() == 2
            await trio.sleep(300)
            closed = [r for r in fake.connections if not r.is_open]
            nursery.cancel_scope.cancel()
        status = feed.status()
    assert [c.rotations for c in status.connections] == [1, 1]
    assert not recorder.states("LOST")
    # The announced sockets were closed by us after the switch, before the venue's grace.
    assert len(closed) == 2 and all(r.close_reason == "client" for r in closed)
    assert all(r.closed_at is not None and r.closed_at < 100 + 30 for r in closed)
    trades = recorder.of(Trade, "BTCUSDT")
    assert_trades_complete(trades, fake, "BTCUSDT")
    assert all(t.source == "ws" for t in trades)
    no_duplicates(recorder.events)


# ---- health and shutdown -----------------------------------------------------------------


async def test_health_is_unhealthy_when_a_connection_failed(autojump_clock):
    config = make_config(
        symbols=("BTCUSDT",),
        channels=("aggTrade",),
        reconnect={"base_delay": 1.0, "max_delay": 2.0, "max_retries": 2},
    )
    async with FakeExchange(seed=18) as fake, feed_on(fake, config) as feed:
        await trio.sleep(5)
        ok, body = health(feed.status(), 0.5)
        assert ok and body["healthy"] is True
        fake.refuse_next(100)
        fake.drop_connections()
        await trio.sleep(60)
        ok, body = health(feed.status(), 0.5)
        assert not ok
        assert body["connections"][MARKET] == "FAILED"


async def test_shutdown_is_bounded_when_the_peer_never_answers_the_close(autojump_clock):
    config = make_config(symbols=("BTCUSDT",), channels=("aggTrade", "bookTicker"))
    async with FakeExchange(seed=19) as fake:
        async with feed_on(fake, config):
            await trio.sleep(10)
            fake.ignore_close_handshake()
            started = trio.current_time()
        took = trio.current_time() - started
    assert took <= 2.0 + 1e-3
    assert any(r.close_frame_ignored for r in fake.connections)


async def test_shutdown_timeout_is_configurable(autojump_clock):
    config = make_config(symbols=("BTCUSDT",), channels=("aggTrade",), shutdown={"timeout": 0.5})
    async with FakeExchange(seed=20) as fake:
        async with feed_on(fake, config):
            await trio.sleep(10)
            fake.ignore_close_handshake()
            started = trio.current_time()
        assert trio.current_time() - started <= 0.5 + 1e-3


async def test_the_monitoring_endpoint_runs_beside_the_feed():
    # A real loopback listener (so no autojump clock here); the feed itself is in-process.
    config = make_config(
        symbols=("BTCUSDT",), channels=("aggTrade",), monitoring={"enabled": True, "port": 0}
    )

    async def get(port: int, path: str) -> tuple[bytes, bytes]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = f"GET {path} HTTP/1.1\r\nHost: feed\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        await stream.aclose()
        head, _, body = data.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0], body

    async with FakeExchange(seed=21) as fake, feed_on(fake, config) as feed:
        port = feed.monitoring_port
        assert port
        status_line, body = await get(port, "/health")
        assert status_line == b"HTTP/1.1 200 OK"
        assert orjson.loads(body)["healthy"] is True
        status_line, body = await get(port, "/metrics")
        assert status_line == b"HTTP/1.1 200 OK"
        assert b'trio_feed_symbol_quality{symbol="BTCUSDT",venue="binance-usdm"} 1.0' in body
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)  # closed with the feed
