"""The supervisor tree end to end, on the fake exchange in virtual time."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_feed import Feed, Kline, SlowConsumer, StateChange, Trade
from trio_feed.core.backoff import Backoff, BackoffPolicy
from trio_feed.events import Event
from trio_feed.runtime.transport import TrioWebsocketTransport, WebsocketsTransport
from trio_feed.testing import FakeExchange

from support import (
    assert_klines_complete,
    assert_trades_complete,
    count_tasks,
    feed_on,
    make_config,
)

MARKET = "binance-usdm/market/0"
PUBLIC = "binance-usdm/public/1"


class Recorder:
    """Collects every event of one subscription, with the virtual time it arrived."""

    def __init__(self, feed: Feed) -> None:
        self.sub = feed.events(max_buffer=1_000_000)
        self.events: list[Event] = []
        self.times: list[float] = []

    async def run(self) -> None:
        async for event in self.sub:
            self.events.append(event)
            self.times.append(trio.current_time())

    def states(self, connection: str | None = None) -> list[StateChange]:
        return [
            e
            for e in self.events
            if isinstance(e, StateChange) and (connection is None or e.connection == connection)
        ]

    def state_times(self, connection: str, state: str) -> list[float]:
        return [
            t
            for e, t in zip(self.events, self.times, strict=True)
            if isinstance(e, StateChange) and e.connection == connection and e.state == state
        ]

    def trades(self, symbol: str) -> list[Trade]:
        return [e for e in self.events if isinstance(e, Trade) and e.symbol == symbol]

    def klines(self, symbol: str) -> list[Kline]:
        return [e for e in self.events if isinstance(e, Kline) and e.symbol == symbol]


def assert_trades_match(recorder: Recorder, fake: FakeExchange, symbol: str) -> None:
    """Everything the fake wrote on the aggTrade stream arrived, in order, unchanged, and
    whatever a disconnect cost came back from REST: no gap, no duplicate."""
    sent = fake.sent(f"{symbol.lower()}@aggTrade")
    got = recorder.trades(symbol)
    assert sent, "the fake sent nothing"
    live = [t for t in got if t.source == "ws"]
    assert [t.id for t in live] == [p["a"] for p in sent]
    for trade, payload in zip(live, sent, strict=True):
        assert trade.price == Decimal(payload["p"])
        assert trade.qty == Decimal(payload["q"])
        assert trade.time == payload["T"]
        assert trade.buyer_is_maker is payload["m"]
    assert_trades_complete(got, fake, symbol)


async def test_end_to_end_delivers_every_frame_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=3) as fake, trio.open_nursery() as nursery:
        async with feed_on(fake, make_config()) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(125.3)
            status = feed.status()
        assert [(c.id, c.state) for c in status.connections] == [
            (MARKET, "SUBSCRIBED"),
            (PUBLIC, "SUBSCRIBED"),
        ]
        assert status.connections[0].streams == (
            "btcusdt@aggTrade",
            "btcusdt@kline_1m",
            "ethusdt@aggTrade",
            "ethusdt@kline_1m",
        )
        assert status.connections[1].streams == ("btcusdt@bookTicker", "ethusdt@bookTicker")
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert_trades_match(rec, fake, symbol)
            sent = fake.sent(f"{symbol.lower()}@kline_1m")
            klines = rec.klines(symbol)
            assert [(k.open_time, k.closed, k.close) for k in klines] == [
                (p["k"]["t"], p["k"]["x"], Decimal(p["k"]["c"])) for p in sent
            ]
            assert sum(k.closed for k in klines) == 2  # two minutes closed in 125 s
        # Routes never mixed: the fake saw one /market and one /public connection.
        assert sorted(c.route for c in fake.connections) == ["market", "public"]
        states = [(s.connection, s.previous, s.state) for s in rec.states()]
        for conn in (MARKET, PUBLIC):
            assert [s[1:] for s in states if s[0] == conn] == [
                ("DISCONNECTED", "CONNECTING"),
                ("CONNECTING", "CONNECTED"),
                ("CONNECTED", "SUBSCRIBED"),
                ("SUBSCRIBED", "DISCONNECTED"),  # leaving the block
            ]


async def test_leaving_the_block_closes_every_socket_and_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=4) as fake:
        baseline = count_tasks()
        async with feed_on(fake, make_config()) as feed:
            await trio.sleep(10.7)
            assert len(fake.live_connections) == 2
            assert count_tasks() > baseline
            status = feed.status()
        await trio.sleep(1.1)  # let the fake notice the closes
        assert fake.live_connections == []
        assert count_tasks() == baseline
        assert {c.messages > 0 for c in status.connections} == {True}


async def test_refused_connects_back_off_by_the_formula_then_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reconnect = {"base_delay": 1.0, "max_delay": 8.0, "jitter_ratio": 0.25, "max_retries": 5}
    config = make_config(channels=["aggTrade"], reconnect=reconnect)
    async with FakeExchange(seed=5) as fake, trio.open_nursery() as nursery:
        fake.refuse_next(100)  # TCP-level refusal: connect() raises OSError
        async with feed_on(fake, config, seed=42) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(300.1)
            status = feed.status()
    attempts = rec.state_times(MARKET, "CONNECTING")
    assert len(attempts) == 6  # the first try and five retries
    twin = Backoff(
        BackoffPolicy(base_delay=1.0, max_delay=8.0, jitter_ratio=0.25, max_retries=5,
                      stable_after=40.0),
        random.Random(f"42/{MARKET}"),
    )  # fmt: skip
    expected = [twin.next_delay(0.0) for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps == pytest.approx(expected, abs=1e-9)
    assert gaps != pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0], abs=1e-3)  # jitter applied
    assert twin.next_delay(0.0) is None
    assert [s.state for s in rec.states(MARKET)][-3:] == ["LOST", "FAILED", "DISCONNECTED"]
    assert [s.retry for s in rec.states(MARKET) if s.state == "RECONNECTING"] == [1, 2, 3, 4, 5]
    assert status.connections[0].state == "FAILED"
    assert fake.attempts == 6 and fake.refused == 6


async def test_rejected_handshakes_count_as_failed_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(channels=["aggTrade"], reconnect={"jitter_ratio": 0.0})
    async with FakeExchange(seed=6) as fake, trio.open_nursery() as nursery:
        fake.refuse_next(2, status=503)
        async with feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(30.3)
            status = feed.status()
    attempts = rec.state_times(MARKET, "CONNECTING")
    assert [b - a for a, b in itertools.pairwise(attempts)] == pytest.approx([1.0, 2.0])
    assert status.connections[0].state == "SUBSCRIBED"
    assert "503" in (status.connections[0].last_error or "")
    assert_trades_match(rec, fake, "BTCUSDT")


async def test_missed_pong_means_lost_then_the_same_streams_come_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(ping={"interval": 5.0, "timeout": 3.0})
    async with FakeExchange(seed=7) as fake, trio.open_nursery() as nursery:
        async with feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(20.3)
            first = next(c for c in fake.connections if c.route == "market")
            fake.black_hole(route="market")
            await trio.sleep(30.1)
            status = feed.status()
        market = [c for c in fake.connections if c.route == "market"]
        assert len(market) == 2
        assert market[1].streams == first.streams  # re-subscribed exactly its own streams
        lost = [s for s in rec.states(MARKET) if s.state == "LOST"]
        assert len(lost) == 1
        assert status.connections[0].last_error == "timed out"
        assert status.connections[0].state == "SUBSCRIBED"
        assert status.connections[0].reconnects == 1
        # The other connection never noticed.
        assert [s.state for s in rec.states(PUBLIC)][:3] == [
            "CONNECTING", "CONNECTED", "SUBSCRIBED",
        ]  # fmt: skip
        assert len(rec.states(PUBLIC)) == 4  # ... and then DISCONNECTED at the end
        # Trades resumed on the new connection (ids missed meanwhile are the backfill's job).
        btc = rec.trades("BTCUSDT")
        assert btc[-1].time > fake.now_ms() - 10_000
        assert [t.id for t in btc] == sorted({t.id for t in btc})


async def test_a_dropped_connection_does_not_disturb_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=8) as fake, trio.open_nursery() as nursery:
        async with feed_on(fake, make_config()) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(15.2)
            for _ in range(3):
                assert fake.drop_connections(route="public") == 1
                await trio.sleep(17.9)
            status = feed.status()
        assert [s.state for s in rec.states(MARKET)] == [
            "CONNECTING", "CONNECTED", "SUBSCRIBED", "DISCONNECTED",
        ]  # fmt: skip
        assert status.connections[1].reconnects == 3
        assert "closed by peer" in (status.connections[1].last_error or "")
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert_trades_match(rec, fake, symbol)  # not one market frame lost


async def test_malformed_frames_are_counted_and_skipped(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeExchange(seed=9) as fake, trio.open_nursery() as nursery:
        async with feed_on(fake, make_config()) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(5.2)
            assert fake.send_malformed(7, route="market") == 7
            await trio.sleep(10.3)
            status = feed.status()
    assert status.connections[0].malformed == 7
    assert status.connections[0].state == "SUBSCRIBED"
    assert status.connections[0].reconnects == 0
    assert_trades_match(rec, fake, "BTCUSDT")
    logged = [r for r in caplog.records if "malformed frame" in r.getMessage()]
    assert 1 <= len(logged) <= 7  # logged, but not without bound


async def test_a_slow_consumer_fails_alone_and_never_stalls_the_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=10, trade_rate=20.0) as fake, trio.open_nursery() as nursery:
        async with feed_on(fake, make_config()) as feed:
            slow = feed.events(max_buffer=50)  # never read while the feed runs
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(60.4)
            status = feed.status()
            got = [await slow.receive() for _ in range(50)]
            with pytest.raises(SlowConsumer) as info:
                await slow.receive()
    assert got == rec.events[:50]  # what it had, in order
    assert info.value.dropped > 1000
    assert status.subscriptions == 1  # the overflowed one was let go
    assert [c.state for c in status.connections] == ["SUBSCRIBED", "SUBSCRIBED"]
    assert all(c.reconnects == 0 for c in status.connections)
    assert_trades_match(rec, fake, "BTCUSDT")


async def test_server_shutdown_without_a_replacement_reconnects_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The announcement starts a rotation, but every replacement attempt is refused: when the
    # venue closes the announced socket, the reconnect is immediate and spends no retry.
    async with FakeExchange(seed=11, shutdown_grace=10.0) as fake, trio.open_nursery() as nursery:
        async with feed_on(fake, make_config()) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(10.2)
            fake.refuse_next(4)
            assert fake.announce_shutdown(route="market") == 1
            await trio.sleep(60.1)
            status = feed.status()
    lost = rec.state_times(MARKET, "LOST")
    again = rec.state_times(MARKET, "CONNECTING")
    assert len(lost) >= 1 and len(again) >= 2
    assert again[1] == lost[0]  # no backoff delay
    first_retry = next(
        s for s in rec.states(MARKET) if s.state == "CONNECTING" and s.previous != "DISCONNECTED"
    )
    assert first_retry.retry == 0
    assert lost[0] == pytest.approx(10.2 + 10.0, abs=0.1)  # the venue's grace, then its close
    assert status.connections[0].state == "SUBSCRIBED"
    assert status.connections[0].rotations == 0


async def test_market_time_comes_from_the_exchange_not_the_local_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=12) as fake, trio.open_nursery() as nursery:
        # The local clock is 3 hours slow.
        async with feed_on(fake, make_config(), skew_ms=-3 * 3_600_000) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(3.3)
            assert abs(feed.market_time() - fake.now_ms()) <= 10
            status = feed.status()
            fake.drop_connections(route="market")
            await trio.sleep(3.1)
    assert status.venues[0].clock_offset_ms == pytest.approx(3 * 3_600_000, abs=10)
    assert fake.rest_calls["/fapi/v1/time"] >= 1
    lost = next(s for s in rec.states(MARKET) if s.state == "LOST")
    lost_at = rec.times[rec.events.index(lost)]
    expected_ms = fake.start_time_ms + (lost_at - 0.0) * 1000
    assert abs(lost.time - expected_ms) <= 1000  # exchange time, not 3 h off


async def test_pool_packs_many_streams_within_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    config = make_config(
        symbols=symbols,
        channels=["aggTrade", "kline_1m", "depth"],
        connection_pool={"max_connections": 6, "max_streams_per_connection": 4},
    )
    async with FakeExchange(symbols=tuple(symbols), seed=13) as fake:
        async with feed_on(fake, config) as feed:
            await trio.sleep(5.3)
            status = feed.status()
        routes: dict[str, set[str]] = {"market": set(), "public": set()}
        for record in fake.connections:
            assert 0 < len(record.streams) <= 4
            kinds = {("public" if "depth" in s else "market") for s in record.streams}
            assert kinds == {record.route}  # never mixed
            routes[record.route] |= set(record.streams)
        assert len(routes["market"]) == 10 and len(routes["public"]) == 5
        assert len(fake.connections) == 5  # 10 market streams -> 3, 5 depth -> 2
        assert all(c.state == "SUBSCRIBED" for c in status.connections)


async def test_a_day_of_random_faults_ends_healthy_with_nothing_lost_or_leaked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(2026)
    config = make_config(
        channels=["aggTrade", "kline_1m", "bookTicker"],
        reconnect={"max_retries": 0, "max_delay": 30.0},
        ping={"interval": 60.0, "timeout": 10.0},
    )
    faults: list[str] = []
    # A quiet market (frames pushed every 10 s, a trade every ~30 s, the book moving every
    # minute): this test is about supervision over a long run, and must stay a few seconds
    # of wall time on a slow machine; the busy paths are covered by the tests above.
    async with FakeExchange(
        seed=14, tick=10.0, depth_every=6, trade_rate=0.03, kline_every=6, sent_history=None
    ) as fake:
        baseline = count_tasks()
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            deadline = trio.current_time() + 24 * 3600
            while trio.current_time() < deadline - 1800:
                await trio.sleep(rng.uniform(600, 2400) + 0.0173)
                fault = rng.choice(["drop", "black_hole", "refuse", "malformed", "shutdown"])
                route = rng.choice(["market", "public"])
                faults.append(fault)
                if fault == "drop":
                    fake.drop_connections(route=route)
                elif fault == "black_hole":
                    fake.black_hole(route=route)
                elif fault == "refuse":
                    fake.drop_connections(route=route)
                    fake.refuse_next(rng.randint(1, 4), status=rng.choice([None, 503]))
                elif fault == "malformed":
                    fake.send_malformed(rng.randint(1, 5), route=route)
                else:
                    fake.announce_shutdown(route=route)
            await trio.sleep(deadline - trio.current_time())
            status = feed.status()
            end_ms = fake.now_ms()
            nursery.cancel_scope.cancel()
        # The fake keeps a black-holed server connection until its next ping goes
        # unanswered for its pong timeout; every task of ours ended with the block.
        await trio.sleep(fake.server_ping_interval + fake.pong_timeout + 1.3)
        assert count_tasks() == baseline
        assert fake.live_connections == []
    assert len(set(faults)) == 5 and len(faults) > 30
    assert fake.incoming_limit_violations == 0  # never more than 10 messages a second
    assert [c.state for c in status.connections] == ["SUBSCRIBED", "SUBSCRIBED"]
    assert sum(c.reconnects for c in status.connections) >= len(faults) - faults.count("malformed")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        # Everything missed while disconnected came back from REST, exactly once.
        trades = rec.trades(symbol)
        assert_trades_complete(trades, fake, symbol)
        # Up to the end (the fake pushes frames every 10 s here).
        assert trades[-1].id >= fake.market.trades(symbol, end_time=end_ms - 10_000)[-1].agg_id
        assert any(t.source == "rest" for t in trades)
        closed = assert_klines_complete(rec.klines(symbol), fake, symbol, "1m")
        assert len(closed) >= 24 * 60 - 2
        assert any(k.source == "rest" for k in closed)
        tickers: list[Any] = [e for e in rec.events if type(e).__name__ == "BookTicker"]
        assert tickers


@pytest.mark.parametrize("transport", [WebsocketsTransport, TrioWebsocketTransport])
async def test_both_transports_recover_from_drops_and_black_holes(
    autojump_clock: trio.testing.MockClock, transport: type
) -> None:
    config = make_config(ping={"interval": 5.0, "timeout": 3.0})
    async with FakeExchange(seed=15) as fake, trio.open_nursery() as nursery:
        async with feed_on(fake, config, transport=transport()) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(10.3)
            fake.drop_connections(route="market")
            await trio.sleep(10.1)
            fake.black_hole(route="public")
            await trio.sleep(20.7)
            status = feed.status()
    assert [c.state for c in status.connections] == ["SUBSCRIBED", "SUBSCRIBED"]
    assert [c.reconnects for c in status.connections] == [1, 1]
    assert status.connections[1].last_error == "timed out"
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_trades_match(rec, fake, symbol)


SUBSCRIBING_CHANNELS = ("aggTrade", "kline_1m")


@pytest.fixture
def subscribing_venue(monkeypatch: pytest.MonkeyPatch) -> str:
    import trio_feed.venues

    name = "binance-usdm-subscribing"
    builtin = {**trio_feed.venues._BUILTIN, name: "subscribing_venue:SubscribeAfterConnectAdapter"}
    monkeypatch.setattr(trio_feed.venues, "_BUILTIN", builtin)
    return name


async def test_subscribe_after_connect_waits_for_every_acknowledgement(
    autojump_clock: trio.testing.MockClock, subscribing_venue: str
) -> None:
    conn_id = f"{subscribing_venue}/market/0"
    config = make_config(channels=SUBSCRIBING_CHANNELS, exchange=subscribing_venue)
    async with FakeExchange(seed=16, rest_latency=0.3) as fake, trio.open_nursery() as nursery:
        async with feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(20.3)
            fake.drop_connections(route="market")
            await trio.sleep(20.1)
            status = feed.status()
    records = [c for c in fake.connections if c.route == "market"]
    assert [r.path for r in records] == ["/market/ws", "/market/ws"]
    # Four SUBSCRIBE requests per connection, each acknowledged before SUBSCRIBED.
    for record in records:
        subscribes = [m for m in record.control_messages if '"SUBSCRIBE"' in m]
        assert len(subscribes) == 4
        assert sorted(record.streams) == sorted(status.connections[0].streams)
    assert [s.state for s in rec.states(conn_id)][:3] == ["CONNECTING", "CONNECTED", "SUBSCRIBED"]
    assert status.connections[0].state == "SUBSCRIBED"
    assert_trades_match(rec, fake, "BTCUSDT")


async def test_a_rejected_subscription_is_a_failed_attempt_not_a_silent_gap(
    autojump_clock: trio.testing.MockClock, subscribing_venue: str
) -> None:
    conn_id = f"{subscribing_venue}/market/0"
    config = make_config(
        channels=SUBSCRIBING_CHANNELS,
        exchange=subscribing_venue,
        reconnect={"max_retries": 2, "jitter_ratio": 0.0},
    )
    # The venue accepts at most 2 streams per connection: the third SUBSCRIBE is refused.
    async with FakeExchange(seed=17, max_streams_per_connection=2) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(30.3)
            status = feed.status()
            nursery.cancel_scope.cancel()
    assert "SUBSCRIBED" not in [s.state for s in rec.states(conn_id)]
    assert status.connections[0].state == "FAILED"
    assert "venue rejected subscribing" in (status.connections[0].last_error or "")
    assert "too many streams" in (status.connections[0].last_error or "")


async def test_sinks_drain_even_when_the_code_around_the_feed_is_cancelled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    config = make_config(sinks=[{"kind": "jsonl", "path": str(path)}])
    async with FakeExchange(seed=17) as fake:
        with trio.move_on_after(30.3):  # a user's timeout around the feed
            async with feed_on(fake, config):
                await trio.sleep_forever()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    # Written to the end: the connections' DISCONNECTED on the way out is in the file.
    assert [e["state"] for e in lines if e["type"] == "state"][-2:] == [
        "DISCONNECTED",
        "DISCONNECTED",
    ]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = [e["id"] for e in lines if e["type"] == "trade" and e["symbol"] == symbol]
        assert len(ids) > 30
        assert ids == list(range(ids[0], ids[0] + len(ids)))
