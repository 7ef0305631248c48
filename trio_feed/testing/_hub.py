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
had ended there. Depth faults (skipped, duplicated, distorted and reordered diffs) are
counted per stream; asked for a symbol with no live depth stream, they wait for the first
of its depth streams to start.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from attrs import define, evolve, fields

from ._connection import Connection
from .market import FakeMarket
from .records import AggTrade, DepthDistortion, DepthStep, KlineBar
from .wire import USDM_WIRE, BinanceWire, ControlRequest, StreamSpec, parse_control

__all__ = ["StreamHub"]

_T = TypeVar("_T")


@define(slots=True)
class _DepthFaults:
    """Depth faults still to apply: counts of the next diffs to treat so."""

    skip: int = 0  # generate but do not send (skip_depth_update)
    duplicate: int = 0  # send twice in a row (duplicate_depth_update)
    distort: int = 0  # send with one wrong quantity (distort_depth)
    reorder: int = 0  # pairs of diffs to send swapped (reorder_depth_updates)

    def add(self, other: _DepthFaults) -> None:
        for f in fields(_DepthFaults):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@define(slots=True, eq=False)
class _DepthStream:
    after_id: int  # the u of the previous message
    bucket: int  # exchange time // period of the previous push
    faults: _DepthFaults
    # reorder_depth_updates: the first diff of the pair (payload, copies), sent after the next
    held: tuple[dict[str, Any], int] | None = None


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
        wire: BinanceWire = USDM_WIRE,
    ) -> None:
        self.market = market
        #: Stream names, routes and payload shapes of the market served.
        self.wire = wire
        self.kline_every = kline_every
        self.mark_every = mark_every
        self.max_streams_per_connection = max_streams_per_connection
        #: Silenced stream names -> whether a new subscription ends the silence.
        self.silenced: dict[str, bool] = {}
        self.depth_skipped: list[dict[str, Any]] = []
        self.depth_duplicated: list[dict[str, Any]] = []
        self.depth_distorted: list[DepthDistortion] = []
        self.depth_reordered: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._symbols = set(market.symbols)
        self._subs: dict[str, dict[int, Connection]] = {}
        self._live: dict[str, StreamSpec] = {}
        self._depth: dict[str, _DepthStream] = {}
        self._pending_faults: dict[str, _DepthFaults] = {}
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
        return self.wire.parse_stream(name, self._symbols)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, conn: Connection, names: Iterable[str], now: int) -> None:
        """Add ``names`` to ``conn``'s subscriptions (already subscribed ones are ignored)."""
        for name in names:
            if name in conn.record.streams:
                continue
            conn.record.streams.append(name)
            spec = self.parse(name)
            if spec is None or not self.wire.deliverable(conn.record.route, spec):
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
                if ours and self.wire.deliverable(conn.record.route, spec):
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
            faults = self._pending_faults.pop(spec.symbol, None) or _DepthFaults()
            self._depth[spec.name] = _DepthStream(after, now // spec.period_ms, faults)

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

    def depth_fault(
        self, symbol: str, *, skip: int = 0, duplicate: int = 0, distort: int = 0, reorder: int = 0
    ) -> None:
        """Apply the next diffs of each live depth stream of ``symbol`` (or of the first to
        start, if none is live) as given (see `FakeExchange.skip_depth_update` and the
        other depth faults)."""
        counts = (skip, duplicate, distort, reorder)
        if min(counts) < 0:
            raise ValueError("fault counts must not be negative")
        extra = _DepthFaults(*counts)
        live = [s for s in self._live.values() if s.kind == "depth" and s.symbol == symbol]
        if not live:
            self._pending_faults.setdefault(symbol, _DepthFaults()).add(extra)
        for spec in live:
            self._depth[spec.name].faults.add(extra)

    # ------------------------------------------------------------------ sending

    def publish(
        self, name: str, build: Callable[[_T, int], dict[str, Any]], item: _T, now: int
    ) -> None:
        """Build the payload of ``name`` once and queue it on every subscriber."""
        if self._subs.get(name) and name not in self.silenced:
            self._fan_out(name, build(item, now))

    def _fan_out(self, name: str, payload: dict[str, Any], copies: int = 1) -> None:
        """Queue ``payload`` ``copies`` times in a row on every subscriber of ``name``."""
        subscribers = self._subs.get(name)
        if not subscribers or name in self.silenced:
            return
        data = orjson.dumps(payload).decode()
        combined: str | None = None
        for conn in list(subscribers.values()):
            if conn.record.streams_stalled:
                continue  # stall_connection_streams: nothing on this connection
            if conn.record.combined:
                if combined is None:
                    combined = f'{{"stream":{orjson.dumps(name).decode()},"data":{data}}}'
                text = combined
            else:
                text = data
            for _ in range(copies):
                conn.enqueue(name, data, text)

    def tick(self, k: int, now: int, events: list[AggTrade | KlineBar]) -> None:
        """Send what is due at tick ``k`` (exchange time ``now``).

        ``events`` are the trades and closed klines since the previous tick, in time order;
        a closed kline's final frame therefore goes out before the next kline's updates.
        """
        wire = self.wire
        for event in events:
            if isinstance(event, AggTrade):
                self.publish(f"{event.symbol.lower()}@aggTrade", wire.aggtrade_payload, event, now)
            else:
                bar_key = (event.symbol, event.interval)
                if self._distortions[bar_key] > 0:
                    self._distortions[bar_key] -= 1
                    event = _distorted(event)
                symbol = event.symbol.lower()
                self.publish(f"{symbol}@kline_{event.interval}", wire.kline_payload, event, now)
                name = f"{symbol}_perpetual@continuousKline_{event.interval}"
                self.publish(name, wire.continuous_kline_payload, event, now)
        for name, spec in list(self._live.items()):
            if spec.kind == "depth":
                self._tick_depth(name, spec, now)
            elif spec.kind == "bookTicker":
                quote = self.market.best_quote(spec.symbol)
                key = (quote.bid_price, quote.bid_qty, quote.ask_price, quote.ask_qty)
                if self._last_quote.get(name) != key:
                    self._last_quote[name] = key
                    self.publish(name, wire.book_ticker_payload, quote, now)
            elif spec.kind in ("kline", "continuousKline"):
                if k % self.kline_every == 0:
                    assert spec.interval is not None
                    bar = self.market.current_kline(spec.symbol, spec.interval)
                    build = wire.kline_payload
                    if spec.kind == "continuousKline":
                        build = wire.continuous_kline_payload
                    self.publish(name, build, bar, now)
            elif spec.kind == "markPrice" and k % self._mark_every(spec) == 0:
                mark = self.market.mark_price(spec.symbol, now)
                self.publish(name, wire.mark_price_payload, mark, now)

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
        faults = state.faults
        # Faults act on the diffs as generated, whether or not anyone receives them (a
        # silenced or stalled stream uses them up too). A skipped diff is only skipped.
        if faults.skip:
            faults.skip -= 1
            self.depth_skipped.append(self.wire.depth_payload(diff, now))
            return
        if faults.distort:
            faults.distort -= 1
            diff = self._distort(name, diff, now)
        payload = self.wire.depth_payload(diff, now)
        copies = 1
        if faults.duplicate:
            faults.duplicate -= 1
            copies = 2
            self.depth_duplicated.append(payload)
        if state.held is None and faults.reorder:
            faults.reorder -= 1
            state.held = (payload, copies)  # sent right after the next diff
            return
        self._fan_out(name, payload, copies)
        if state.held is not None:
            held, held_copies = state.held
            state.held = None
            self._fan_out(name, held, held_copies)
            self.depth_reordered.append((held, payload))

    def _distort(self, name: str, diff: DepthStep, now: int) -> DepthStep:
        """``diff`` with one wrong quantity, recorded in `depth_distorted`.

        The level nearest the touch that the diff sets (the highest bid, else the lowest
        ask; a removal only if the diff sets nothing) gets twice its quantity plus one lot
        step, so it is never right and never zero: a removal becomes a phantom level.
        """
        step = self.market.spec(diff.symbol).step_size
        candidates: list[tuple[str, int]] = []
        candidates += [("bids", i) for i in reversed(range(len(diff.bids)))]
        candidates += [("asks", i) for i in range(len(diff.asks))]
        side, index = next(((s, i) for s, i in candidates if getattr(diff, s)[i][1]), candidates[0])
        levels = list(getattr(diff, side))
        price, qty = levels[index]
        wrong = qty * 2 + step
        levels[index] = (price, wrong)
        self.depth_distorted.append(
            DepthDistortion(
                symbol=diff.symbol,
                stream=name,
                first_update_id=diff.first_update_id,
                last_update_id=diff.last_update_id,
                time=now,
                side=side,
                price=price,
                true_qty=qty,
                sent_qty=wrong,
            )
        )
        if side == "bids":
            return evolve(diff, bids=tuple(levels))
        return evolve(diff, asks=tuple(levels))

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
