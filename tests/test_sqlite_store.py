"""SqliteStore: schema, idempotent writes, revisions, exact decimals, and the readers."""

from __future__ import annotations

import itertools
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_feed.events import BookTicker, Kline, MarkPrice, QualityChange, Reconcile, Trade
from trio_feed.runtime.sqlite_store import (
    SCHEMA_VERSION,
    ResumePoints,
    SqliteStore,
    is_stored,
    read_resume_points,
)

VENUE = "binance-usdm"
MINUTE = 60_000


def kline(
    open_time: int = 0,
    *,
    symbol: str = "BTCUSDT",
    interval: str = "1m",
    revision: int = 0,
    close: str = "100.5",
    closed: bool = True,
    venue: str = VENUE,
    source: str = "ws",
) -> Kline:
    return Kline(
        exchange=venue,
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=open_time + MINUTE - 1,
        open=Decimal("100.1"),
        high=Decimal("101.25"),
        low=Decimal("99.00"),
        close=Decimal(close),
        volume=Decimal("12.345"),
        quote_volume=Decimal("1234.5"),
        trades=42,
        taker_buy_volume=Decimal("6.1"),
        taker_buy_quote_volume=Decimal("610.0"),
        closed=closed,
        source=source,  # type: ignore[arg-type]
        revision=revision,
    )


def trade(id_: int, *, symbol: str = "BTCUSDT", price: str = "100.5", venue: str = VENUE) -> Trade:
    return Trade(
        exchange=venue,
        symbol=symbol,
        id=id_,
        price=Decimal(price),
        qty=Decimal("0.001"),
        first_trade_id=id_ * 10,
        last_trade_id=id_ * 10 + 3,
        time=1_700_000_000_000 + id_,
        buyer_is_maker=id_ % 2 == 0,
        source="ws",
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "feed.sqlite")


def test_opening_creates_the_directory_the_schema_and_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "data" / "sub" / "feed.sqlite"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"klines", "trades", "mark_prices", "reconciliations"} <= tables
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    conn.close()


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    with SqliteStore(path) as first:
        first.write([trade(1)])
    with SqliteStore(path) as second:
        assert second.count_trades() == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        SqliteStore(path)


def test_writing_the_same_batch_twice_changes_nothing(store: SqliteStore) -> None:
    batch = [kline(0), kline(MINUTE), trade(1), trade(2)]
    assert store.write(batch) == 4
    before = (store.klines(VENUE, "BTCUSDT", "1m"), store.trades(VENUE, "BTCUSDT"))
    assert store.write(batch) == 4  # attempted, not new
    assert store.count_klines() == 2 and store.count_trades() == 2
    assert (store.klines(VENUE, "BTCUSDT", "1m"), store.trades(VENUE, "BTCUSDT")) == before


def test_a_higher_revision_replaces_and_a_lower_one_does_not(store: SqliteStore) -> None:
    store.write([kline(0, revision=0, close="1")])
    store.write([kline(0, revision=2, close="3")])
    store.write([kline(0, revision=1, close="2")])  # late, stale
    store.write([kline(0, revision=2, close="999")])  # same revision again: ignored
    (stored,) = store.klines(VENUE, "BTCUSDT", "1m")
    assert (stored.revision, stored.close) == (2, Decimal("3"))


def test_revision_and_source_survive_the_round_trip(store: SqliteStore) -> None:
    original = kline(0, revision=3, source="rest")
    store.write([original])
    assert store.klines(VENUE, "BTCUSDT", "1m") == [original]


def test_only_closed_klines_trades_marks_and_reconciles_are_stored(store: SqliteStore) -> None:
    mark = MarkPrice(
        VENUE, "BTCUSDT", Decimal("100.1"), Decimal("100.2"), Decimal("-0.0001"), 1_000, 900
    )
    reconcile = Reconcile("BTCUSDT", "1m", 0, ("close: 1 != 2", "volume"), "revised")
    skipped = [
        kline(0, closed=False),
        BookTicker(VENUE, "BTCUSDT", Decimal(1), Decimal(2), Decimal(3), Decimal(4), 1, 2),
        QualityChange("BTCUSDT", 0.5, "gap", 3),
    ]
    assert [is_stored(e) for e in skipped] == [False, False, False]
    assert store.write([*skipped, mark, reconcile, kline(MINUTE)]) == 3
    assert store.count_klines() == 1
    assert [k.open_time for k in store.klines(VENUE, "BTCUSDT", "1m")] == [MINUTE]
    assert store.mark_prices(VENUE, "BTCUSDT") == [mark]
    assert store.reconciliations() == [reconcile]
    assert store.write(skipped) == 0


def test_reconciliations_keep_their_order_and_mismatches_as_json(
    store: SqliteStore, tmp_path: Path
) -> None:
    first = Reconcile("ETHUSDT", "5m", 300_000, ("high: 1 != 2", "low: 0 != 1"), "revised")
    second = Reconcile("BTCUSDT", "5m", 600_000, ("close: 3 != 4",), "revised")
    store.write([first, second, first])  # no key: each event is a row, in order
    conn = sqlite3.connect(tmp_path / "feed.sqlite")
    rows = conn.execute("SELECT venue, mismatches FROM reconciliations ORDER BY id").fetchall()
    conn.close()
    assert [venue for venue, _ in rows] == [None, None, None]  # Reconcile has no exchange
    assert json.loads(rows[0][1]) == ["high: 1 != 2", "low: 0 != 1"]
    assert store.reconciliations() == [first, second, first]
    assert store.reconciliations(symbol="ETHUSDT") == [first, first]
    assert store.reconciliations(venue=VENUE) == []


@pytest.mark.parametrize("text", ["0.00000001", "123456789.12345678", "1.10", "0E-8", "-0.5"])
def test_decimals_round_trip_exactly(store: SqliteStore, tmp_path: Path, text: str) -> None:
    store.write([kline(0, close=text), trade(1, price=text)])
    (k,) = store.klines(VENUE, "BTCUSDT", "1m")
    (t,) = store.trades(VENUE, "BTCUSDT")
    for value in (k.close, t.price):
        assert value == Decimal(text)
        assert value.as_tuple() == Decimal(text).as_tuple()  # digits and scale too
    conn = sqlite3.connect(tmp_path / "feed.sqlite")
    stored, kind = conn.execute("SELECT price, typeof(price) FROM trades").fetchone()
    conn.close()
    assert kind == "text"
    assert "E" not in stored or text == "0E-8"  # plain notation for readers of the file
    assert Decimal(stored) == Decimal(text)


def test_trades_are_keyed_by_venue_symbol_and_id(store: SqliteStore) -> None:
    store.write([trade(1), trade(2), trade(1, price="999"), trade(1, symbol="ETHUSDT")])
    store.write([trade(2, price="999"), trade(1, venue="other")])
    assert [(t.id, t.price) for t in store.trades(VENUE, "BTCUSDT")] == [
        (1, Decimal("100.5")),
        (2, Decimal("100.5")),
    ]
    assert store.count_trades(VENUE, "ETHUSDT") == 1
    assert store.count_trades("other") == 1
    assert store.trades(VENUE, "BTCUSDT")[0] == trade(1)


def test_last_closed_klines_and_trade_ids_are_per_key(store: SqliteStore) -> None:
    store.write(
        [
            kline(0),
            kline(2 * MINUTE, revision=1, close="7"),
            kline(MINUTE),
            kline(0, interval="5m"),
            kline(5 * MINUTE, symbol="ETHUSDT"),
            kline(99 * MINUTE, venue="other"),
            trade(5),
            trade(3),
            trade(8, symbol="ETHUSDT"),
            trade(100, venue="other"),
        ]
    )
    last = store.last_closed_klines(VENUE)
    assert sorted(last) == [("BTCUSDT", "1m"), ("BTCUSDT", "5m"), ("ETHUSDT", "1m")]
    assert last["BTCUSDT", "1m"] == kline(2 * MINUTE, revision=1, close="7")
    assert last["BTCUSDT", "5m"].open_time == 0
    assert last["ETHUSDT", "1m"].open_time == 5 * MINUTE
    assert all(k.closed for k in last.values())
    assert store.last_trade_ids(VENUE) == {"BTCUSDT": 5, "ETHUSDT": 8}
    assert store.last_trade_ids("nowhere") == {}
    assert store.last_closed_klines("nowhere") == {}


def test_klines_by_range_and_limit(store: SqliteStore) -> None:
    store.write([kline(i * MINUTE) for i in range(10)])
    store.write([kline(i * MINUTE, interval="5m") for i in range(3)])

    def times(**kw: int) -> list[int]:
        return [k.open_time // MINUTE for k in store.klines(VENUE, "BTCUSDT", "1m", **kw)]

    assert times() == list(range(10))
    assert times(start=3 * MINUTE, end=5 * MINUTE) == [3, 4, 5]  # both ends inclusive
    assert times(limit=3) == [7, 8, 9]  # the last three, ascending
    assert times(start=2 * MINUTE, limit=3) == [2, 3, 4]
    assert times(end=4 * MINUTE, limit=2) == [3, 4]
    assert times(start=20 * MINUTE) == []


def test_trades_from_id_and_limit(store: SqliteStore) -> None:
    store.write([trade(i) for i in range(1, 11)])
    ids = [t.id for t in store.trades(VENUE, "BTCUSDT", from_id=4, limit=3)]
    assert ids == [4, 5, 6]
    assert [t.id for t in store.trades(VENUE, "BTCUSDT", limit=2)] == [9, 10]


def test_a_failed_batch_leaves_nothing_behind(store: SqliteStore) -> None:
    bad = object.__new__(Trade)  # missing attributes: the row build fails before BEGIN
    with pytest.raises(AttributeError):
        store.write([trade(1), bad])
    assert store.count_trades() == 0
    # A failure inside the transaction (a constraint) rolls back what was already inserted.
    null_symbol = Trade(VENUE, None, 2, Decimal(1), Decimal(1), 1, 1, 1, True)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.write([kline(0), trade(1), null_symbol])
    assert store.count_trades() == 0 and store.count_klines() == 0
    assert store.write([kline(0), trade(1)]) == 2  # and the store is usable afterwards


def test_read_resume_points_of_a_missing_file_is_empty_and_creates_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nothing" / "feed.sqlite"
    assert read_resume_points(path, VENUE) == ResumePoints(klines={}, trade_ids={})
    assert not path.exists() and not path.parent.exists()


def test_read_resume_points_of_a_file_without_tables_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    sqlite3.connect(path).close()
    assert read_resume_points(path, VENUE) == ResumePoints(klines={}, trade_ids={})


def test_read_resume_points_reads_what_a_writer_committed(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    with SqliteStore(path) as writer:
        writer.write([kline(0), kline(MINUTE), trade(7)])
        # While the writer is still open (WAL: readers do not block it, nor it them).
        points = read_resume_points(path, VENUE)
        writer.write([trade(8)])
    assert points.klines == {("BTCUSDT", "1m"): kline(MINUTE)}
    assert points.trade_ids == {"BTCUSDT": 7}
    assert read_resume_points(path, VENUE).trade_ids == {"BTCUSDT": 8}


def test_a_readonly_store_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    SqliteStore(path).close()
    with SqliteStore(path, readonly=True) as reader, pytest.raises(sqlite3.OperationalError):
        reader.write([trade(1)])


# ---- property: revisions in any order and batching leave the highest per key -------------

_KEYS = [
    (symbol, interval, open_time)
    for symbol in ("BTCUSDT", "ETHUSDT")
    for interval in ("1m", "1h")
    for open_time in (0, 3_600_000)
]


@st.composite
def revision_batches(draw: st.DrawFn) -> tuple[dict[tuple[str, str, int], int], list[list[Kline]]]:
    """Some keys, each with revisions 0..top (duplicated at will), shuffled, cut into batches."""
    tops = draw(st.dictionaries(st.sampled_from(_KEYS), st.integers(0, 3), min_size=1))
    events = [
        kline(t, symbol=s, interval=i, revision=r, close=f"{r}.{t}")
        for (s, i, t), top in tops.items()
        for r in range(top + 1)
    ]
    events += draw(st.lists(st.sampled_from(events), max_size=10))  # re-deliveries
    events = draw(st.permutations(events))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=5)))
    bounds = [0, *cuts, len(events)]
    return tops, [events[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=100, deadline=None)
@given(revision_batches())
def test_any_order_and_batching_keeps_exactly_the_highest_revision(
    case: tuple[dict[tuple[str, str, int], int], list[list[Kline]]],
) -> None:
    tops, batches = case
    with SqliteStore(":memory:") as mem:
        for batch in batches:
            mem.write(batch)
        assert mem.count_klines() == len(tops)
        for (symbol, interval, open_time), top in tops.items():
            (stored,) = mem.klines(VENUE, symbol, interval, start=open_time, end=open_time)
            assert stored.revision == top
            assert stored.close == Decimal(f"{top}.{open_time}")  # the row of that revision
