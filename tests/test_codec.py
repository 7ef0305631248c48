"""JSON lines: contract field names, decimals as strings, lossless round trip."""

from __future__ import annotations

from decimal import Decimal

import orjson
from trio_feed.codec import EVENT_TYPES, event_from_dict, event_to_dict, json_line
from trio_feed.events import BookUpdate, Kline, StateChange, Trade

KLINE = Kline(
    exchange="binance-usdm", symbol="BTCUSDT", interval="1m", open_time=1, close_time=60000,
    open=Decimal("0.0010"), high=Decimal("0.0025"), low=Decimal("0.0015"),
    close=Decimal("0.0020"), volume=Decimal("1000"), quote_volume=Decimal("1.0000"), trades=100,
    taker_buy_volume=Decimal("500"), taker_buy_quote_volume=Decimal("0.500"), closed=False,
)  # fmt: skip

CONTRACT_FIELDS = {
    "kline": "exchange symbol interval open_time close_time open high low close volume "
    "quote_volume trades taker_buy_volume taker_buy_quote_volume closed source revision",
    "trade": "exchange symbol id price qty first_trade_id last_trade_id time buyer_is_maker source",
    "book": "exchange symbol last_update_id time bids asks",
    "mark_price": "exchange symbol mark_price index_price funding_rate next_funding_time time",
    "book_ticker": "exchange symbol bid_price bid_qty ask_price ask_qty update_id time",
    "state": "connection state previous time streams retry",
    "quality": "symbol score reason time",
    "reconcile": "symbol interval open_time mismatches action",
}


def test_every_event_type_has_exactly_the_contract_fields() -> None:
    assert set(EVENT_TYPES) == set(CONTRACT_FIELDS)
    for name, cls in EVENT_TYPES.items():
        fields = [f for f in cls.__attrs_attrs__]  # type: ignore[attr-defined]
        assert [f.name for f in fields] == CONTRACT_FIELDS[name].split(), name


def test_kline_json_line_keeps_decimal_text_exactly() -> None:
    line = json_line(KLINE)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    data = orjson.loads(line)
    assert next(iter(data)) == "type"
    assert data["type"] == "kline"
    assert data["open"] == "0.0010"  # trailing zero kept: no float on the way
    assert data["trades"] == 100 and data["closed"] is False
    assert data["source"] == "ws" and data["revision"] == 0
    assert event_from_dict(data) == KLINE


def test_book_levels_and_tuples_round_trip() -> None:
    book = BookUpdate(
        exchange="x", symbol="S", last_update_id=7, time=9,
        bids=((Decimal("1.10"), Decimal("2")),), asks=((Decimal("1.20"), Decimal("0.5")),),
    )  # fmt: skip
    data = orjson.loads(json_line(book))
    assert data["bids"] == [["1.10", "2"]] and data["asks"] == [["1.20", "0.5"]]
    assert event_from_dict(data) == book
    state = StateChange(connection="c", state="LOST", previous="SUBSCRIBED", time=1,
                        streams=("a", "b"), retry=2)  # fmt: skip
    assert event_from_dict(event_to_dict(state)) == state


def test_trade_id_field_is_named_id() -> None:
    trade = Trade(
        exchange="x", symbol="S", id=5, price=Decimal("1"), qty=Decimal("2"), first_trade_id=1,
        last_trade_id=3, time=4, buyer_is_maker=True,
    )  # fmt: skip
    assert event_to_dict(trade)["id"] == 5
