"""The fake exchange's stream fan-out: subscriptions, what each tick sends, and the sent log.

`StreamHub` knows which connections listen to which stream, keeps the exchange-wide state of
each live stream (a diff-depth stream's last update id, the last best quote sent), builds each
payload once per tick and queues it on every subscriber, and records what was written. It
also answers the live-subscription control messages, since they only touch subscriptions.

A stream is *live* while at least one connection that can receive it is subscribed; nothing
is computed for streams nobody listens to. Streams of a symbol not (yet) listed are accepted
and deliver nothing, like any unknown stream; when the symbol is listed (`add_symbol`), the
connections already holding such a stream start receiving it.

A diff-depth stream that becomes live starts at the update id the streams had published at
that moment, so its first message's ``pu`` refers to that point, as if an earlier message
had ended there.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from attrs import define, evolve

from ._connection import Connection
from .market import FakeMarket
from .records import AggTrade, KlineBar
from .wire import (
    ControlRequest,
    StreamSpec,
    aggtrade_payload,
    book_ticker_payload,
    continuous_kline_payload,
    deliverable,
    depth_payload,
    kline_payload,
    mark_price_payload,
    parse_control,
    parse_stream,
)

__all__ = ["StreamHub"]

_T = TypeVar("_T")


@define(slots=True, eq=False)
class _DepthStream:
    after_id: int  # the u of the previous message
    bucket: int  # exchange time // period of the previous push
    skip: int = 0  # messages to generate but not send (skip_depth_update)


class StreamHub:
    """Subscriptions and fan-out of one fake exchange (see the module docstring)."""

    def __init__(
        self,
        market: FakeMarket,
        *,
        kline_every: int,
        mark_every: int,
        max_streams_per_connection: int,
        sent_history: int | None,
    ) -> None:
        self.market = market
        self.kline_every = kline_every
        self.mark_every = mark_every
        self.max_streams_per_connection = max_streams_per_connection
        #: Silenced stream names -> whether a new subscription ends the silence.
        self.silenced: dict[str, bool] = {}
        self.depth_skipped: list[dict[str, Any]] = []
        self._symbols = set(market.symbols)
        self._subs: dict[str, dict[int, Connection]] = {}
        self._live: dict[str, StreamSpec] = {}
        self._depth: dict[str, _DepthStream] = {}
        self._pending_skips: Counter[str] = Counter()
        self._distortions: Counter[tuple[str, str]] = Counter()
        self._last_quote: dict[str, tuple[Any, ...]] = {}
        self._sent_history = sent_history
        self._sent: dict[str, deque[tuple[int, str]]] = {}
        self._sent_counts: Counter[str] = Counter()

    @property
    def live(self) -> bool:
        """Whether any stream is live."""
        return bool(self._live)

    def parse(self, name: str) -> StreamSpec | None:
        """`parse_stream` for this exchange's symbols."""
        return parse_stream(name, self._symbols)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, conn: Connection, names: Iterable[str], now: int) -> None:
        """Add ``names`` to ``conn``'s subscriptions (already subscribed ones are ignored)."""
        for name in names:
            if name in conn.record.streams:
                continue
            conn.record.streams.append(name)
            spec = self.parse(name)
            if spec is None or not deliverable(conn.record.route, spec):
                continue  # accepted, but this route never delivers it
            if self.silenced.get(name):
                del self.silenced[name]  # silence(..., resubscribe_heals=True)
            self._attach(conn, spec, now)

    def _attach(self, conn: Connection, spec: StreamSpec, now: int) -> None:
        self._subs.setdefault(spec.name, {})[conn.record.id] = conn
        if spec.name not in self._live:
            self._start(spec, now)

    def add_symbol(self, symbol: str, connections: Iterable[Connection], now: int) -> None:
        """Recognise the streams of a newly listed ``symbol``; the ``connections`` that
        already hold one of them start receiving it."""
        self._symbols.add(symbol)
        for conn in connections:
            if conn.closing:
                continue
            for name in conn.record.streams:
                spec = self.parse(name)
                ours = spec is not None and spec.symbol == symbol
                if ours and deliverable(conn.record.route, spec):
                    assert spec is not None
                    self._attach(conn, spec, now)

    def unsubscribe(self, conn: Connection, names: Iterable[str], *, forget: bool = True) -> None:
        """Remove ``names`` from ``conn``'s subscriptions (``forget=False``: keep them listed
        in its record, for a connection that has closed)."""
        for name in list(names):
            if forget and name in conn.record.streams:
                conn.record.streams.remove(name)
            subscribers = self._subs.get(name)
            if subscribers is None or subscribers.pop(conn.record.id, None) is None:
                continue
            if not subscribers:
                del self._subs[name]
                del self._live[name]
                self._depth.pop(name, None)
                self._last_quote.pop(name, None)

    def _start(self, spec: StreamSpec, now: int) -> None:
        self._live[spec.name] = spec
        if spec.kind == "depth":
            assert spec.period_ms is not None
            after = self.market.published_update_id(spec.symbol)
            state = _DepthStream(after, now // spec.period_ms)
            if self._pending_skips[spec.symbol]:
                self._pending_skips[spec.symbol] -= 1
                state.skip = 1
            self._depth[spec.name] = state

    def control_reply(self, conn: Connection, text: str) -> dict[str, Any]:
        """Apply a live-subscription request from ``conn`` and return the reply to send."""
        request = parse_control(text)
        if not isinstance(request, ControlRequest):
            return request
        streams = conn.record.streams
        if request.method == "SUBSCRIBE":
            new = [s for s in dict.fromkeys(request.params) if s not in streams]
            if len(streams) + len(new) > self.max_streams_per_connection:
                limit = self.max_streams_per_connection
                msg = f"Invalid request: too many streams (at most {limit} per connection)"
                return {"code": 2, "msg": msg, "id": request.id}
            self.subscribe(conn, new, self.market.now_ms)
        elif request.method == "UNSUBSCRIBE":
            self.unsubscribe(conn, [s for s in request.params if s in streams])
        elif request.method == "LIST_SUBSCRIPTIONS":
            return {"result": list(streams), "id": request.id}
        elif request.method == "SET_PROPERTY":
            conn.record.combined = bool(request.params[1])
        else:  # GET_PROPERTY
            return {"result": conn.record.combined, "id": request.id}
        return {"result": None, "id": request.id}

    def skip_depth_update(self, symbol: str) -> None:
        """See `FakeExchange.skip_depth_update`."""
        live = [s for s in self._live.values() if s.kind == "depth" and s.symbol == symbol]
        if not live:
            self._pending_skips[symbol] += 1
        for spec in live:
            self._depth[spec.name].skip += 1

    # ------------------------------------------------------------------ sending

    def publish(
        self, name: str, build: Callable[[_T, int], dict[str, Any]], item: _T, now: int
    ) -> None:
        """Build the payload of ``name`` once and queue it on every subscriber."""
        subscribers = self._subs.get(name)
        if not subscribers or name in self.silenced:
            return
        data = orjson.dumps(build(item, now)).decode()
        combined: str | None = None
        for conn in list(subscribers.values()):
            if conn.record.streams_stalled:
                continue  # stall_connection_streams: nothing on this connection
            if conn.record.combined:
                if combined is None:
                    combined = f'{{"stream":{orjson.dumps(name).decode()},"data":{data}}}'
                conn.enqueue(name, data, combined)
            else:
                conn.enqueue(name, data, data)

    def tick(self, k: int, now: int, events: list[AggTrade | KlineBar]) -> None:
        """Send what is due at tick ``k`` (exchange time ``now``).

        ``events`` are the trades and closed klines since the previous tick, in time order;
        a closed kline's final frame therefore goes out before the next kline's updates.
        """
        for event in events:
            if isinstance(event, AggTrade):
                self.publish(f"{event.symbol.lower()}@aggTrade", aggtrade_payload, event, now)
            else:
                bar_key = (event.symbol, event.interval)
                if self._distortions[bar_key] > 0:
                    self._distortions[bar_key] -= 1
                    event = _distorted(event)
                symbol = event.symbol.lower()
                self.publish(f"{symbol}@kline_{event.interval}", kline_payload, event, now)
                name = f"{symbol}_perpetual@continuousKline_{event.interval}"
                self.publish(name, continuous_kline_payload, event, now)
        for name, spec in list(self._live.items()):
            if spec.kind == "depth":
                self._tick_depth(name, spec, now)
            elif spec.kind == "bookTicker":
                quote = self.market.best_quote(spec.symbol)
                key = (quote.bid_price, quote.bid_qty, quote.ask_price, quote.ask_qty)
                if self._last_quote.get(name) != key:
                    self._last_quote[name] = key
                    self.publish(name, book_ticker_payload, quote, now)
            elif spec.kind in ("kline", "continuousKline"):
                if k % self.kline_every == 0:
                    assert spec.interval is not None
                    bar = self.market.current_kline(spec.symbol, spec.interval)
                    build = kline_payload if spec.kind == "kline" else continuous_kline_payload
                    self.publish(name, build, bar, now)
            elif spec.kind == "markPrice" and k % self._mark_every(spec) == 0:
                mark = self.market.mark_price(spec.symbol, now)
                self.publish(name, mark_price_payload, mark, now)

    def distort_closed_klines(self, symbol: str, interval: str, count: int) -> None:
        """Send the next ``count`` closed klines of ``symbol``/``interval`` wrong."""
        self._distortions[(symbol, interval)] += count

    def _mark_every(self, spec: StreamSpec) -> int:
        return self.mark_every * (3 if spec.period_ms == 3000 else 1)

    def _tick_depth(self, name: str, spec: StreamSpec, now: int) -> None:
        state = self._depth[name]
        assert spec.period_ms is not None
        bucket = now // spec.period_ms
        if bucket <= state.bucket:
            return
        state.bucket = bucket
        up_to = self.market.published_update_id(spec.symbol)
        diff = self.market.depth_diff(spec.symbol, state.after_id, up_to)
        if diff is None:
            return  # the book has not changed: nothing to say
        state.after_id = up_to
        if state.skip:
            state.skip -= 1
            self.depth_skipped.append(depth_payload(diff, now))
            return
        self.publish(name, depth_payload, diff, now)

    def next_due(self, k: int, tick_at: Callable[[int], int]) -> int | None:
        """The first tick after ``k`` at which a live stream has something to send, or None
        if no stream is live. ``tick_at(ms)`` maps exchange time to the first tick at or
        after it."""
        if not self._live:
            return None
        market = self.market
        due: list[int] = []
        for spec in self._live.values():
            if spec.kind == "aggTrade":
                at = market.next_trade_time(spec.symbol)
                if at is not None:
                    due.append(tick_at(at))
            elif spec.kind in ("kline", "continuousKline"):
                due.append((k // self.kline_every + 1) * self.kline_every)
                due.append(tick_at(market.next_kline_close_time()))
            elif spec.kind == "depth":
                assert spec.period_ms is not None
                due.append(tick_at((self._depth[spec.name].bucket + 1) * spec.period_ms))
            elif spec.kind == "bookTicker":
                due.append(tick_at(market.next_book_step_time()))
            else:  # markPrice
                every = self._mark_every(spec)
                due.append((k // every + 1) * every)
        return max(k + 1, min(due))

    # ------------------------------------------------------------------ the sent log

    def record_sent(self, stream: str, connection_id: int, payload: str) -> None:
        """Log a payload written on ``stream`` to connection ``connection_id``."""
        log = self._sent.get(stream)
        if log is None:
            log = self._sent[stream] = deque(maxlen=self._sent_history)
        log.append((connection_id, payload))
        self._sent_counts[stream] += 1

    def sent(self, stream: str, connection: int | None) -> list[dict[str, Any]]:
        """See `FakeExchange.sent`."""
        log = self._sent.get(stream, ())
        return [orjson.loads(p) for c, p in log if connection is None or c == connection]

    def sent_count(self, stream: str) -> int:
        """See `FakeExchange.sent_count`."""
        return self._sent_counts[stream]


def _distorted(bar: KlineBar) -> KlineBar:
    """``bar`` as a faulty stream might report it: the close 1% high, the volume doubled
    plus one step (so even an empty kline differs)."""
    return evolve(bar, close=bar.close + bar.close / 100, volume=bar.volume * 2 + 1)
