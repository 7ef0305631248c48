"""The embedded default store: closed klines, trades, mark prices and reconciliations in SQLite.

Synchronous on purpose (stdlib `sqlite3`, no trio): `~trio_feed.runtime.sinks.SqliteSink`
calls it from worker threads, one call at a time, and the feed reads its resume points from
it once at start-up. Keeping it free of the event loop also makes it usable from scripts
and notebooks as it is.

What is stored, and why only that:

- ``klines``: closed klines only, one row per (venue, symbol, interval, open_time), keeping
  the highest ``revision``. An open kline is a moment in a bar's life, replaced a second
  later; the closed one is the record.
- ``trades``: aggregated trades, one row per (venue, symbol, id).
- ``mark_prices``: one row per (venue, symbol, time).
- ``reconciliations``: every `Reconcile` event, mismatches as a JSON array, in the order
  written (an autoincrement id). `Reconcile` has no ``exchange`` field (the contract lists
  none), so ``venue`` is NULL; it is filled from ``exchange`` if the event ever gets one.

Order-book updates, book tickers, state and quality changes and open klines are not stored:
they are high-rate or transient, and a JSONL sink captures every event when a full record
is wanted.

Every write is idempotent (klines upsert keeping the highest revision, the others ignore
duplicates), because the sink retries a failed batch whole and the feed may re-deliver
around restarts. Prices and quantities are TEXT (the decimal digits, exact); times are
INTEGER milliseconds, as in the events.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from attrs import frozen

from ..events import Kline, MarkPrice, Reconcile, Source, Trade

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "SCHEMA_VERSION",
    "NotAStore",
    "ResumePoints",
    "SqliteStore",
    "is_stored",
    "read_resume_points",
]

#: Stored in ``PRAGMA user_version``; bumped (with a migration) when the tables change.
SCHEMA_VERSION = 1

#: How long a statement waits for another connection's lock before "database is locked".
DEFAULT_BUSY_TIMEOUT = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS klines (
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    interval TEXT NOT NULL,
    open_time INTEGER NOT NULL,
    close_time INTEGER NOT NULL,
    open TEXT NOT NULL,
    high TEXT NOT NULL,
    low TEXT NOT NULL,
    close TEXT NOT NULL,
    volume TEXT NOT NULL,
    quote_volume TEXT NOT NULL,
    trades INTEGER NOT NULL,
    taker_buy_volume TEXT NOT NULL,
    taker_buy_quote_volume TEXT NOT NULL,
    source TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (venue, symbol, interval, open_time)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS trades (
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    id INTEGER NOT NULL,
    price TEXT NOT NULL,
    qty TEXT NOT NULL,
    first_trade_id INTEGER NOT NULL,
    last_trade_id INTEGER NOT NULL,
    time INTEGER NOT NULL,
    buyer_is_maker INTEGER NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (venue, symbol, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS mark_prices (
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    time INTEGER NOT NULL,
    mark_price TEXT NOT NULL,
    index_price TEXT NOT NULL,
    funding_rate TEXT NOT NULL,
    next_funding_time INTEGER NOT NULL,
    PRIMARY KEY (venue, symbol, time)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS reconciliations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    venue TEXT,
    symbol TEXT NOT NULL,
    interval TEXT NOT NULL,
    open_time INTEGER NOT NULL,
    mismatches TEXT NOT NULL,
    action TEXT NOT NULL
);
"""

_KLINE_COLUMNS = (
    "venue, symbol, interval, open_time, close_time, open, high, low, close, volume, "
    "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, source, revision"
)

# A re-delivered revision changes nothing and a lower one never replaces a higher one:
# the WHERE makes the DO UPDATE a no-op unless the incoming revision is strictly higher.
_INSERT_KLINE = f"""
INSERT INTO klines ({_KLINE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (venue, symbol, interval, open_time) DO UPDATE SET
    close_time = excluded.close_time,
    open = excluded.open,
    high = excluded.high,
    low = excluded.low,
    close = excluded.close,
    volume = excluded.volume,
    quote_volume = excluded.quote_volume,
    trades = excluded.trades,
    taker_buy_volume = excluded.taker_buy_volume,
    taker_buy_quote_volume = excluded.taker_buy_quote_volume,
    source = excluded.source,
    revision = excluded.revision
WHERE excluded.revision > klines.revision
"""

_TRADE_COLUMNS = (
    "venue, symbol, id, price, qty, first_trade_id, last_trade_id, time, buyer_is_maker, source"
)
_INSERT_TRADE = (
    f"INSERT INTO trades ({_TRADE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_MARK_PRICE = (
    "INSERT INTO mark_prices (venue, symbol, time, mark_price, index_price, funding_rate, "
    "next_funding_time) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_INSERT_RECONCILE = (
    "INSERT INTO reconciliations (venue, symbol, interval, open_time, mismatches, action) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

_dec_format = Decimal.__format__


def _dec(value: Decimal) -> str:
    # Plain notation ("0.00000001", never "1E-8"): readable in any SQLite tool, and exact,
    # digits and scale included, for every value with a non-positive exponent (all
    # exchange data). A value with a positive exponent (Decimal("1E+2")) reads back equal.
    # str() first: it is plain for nearly every price and 3x cheaper than format().
    text = str(value)
    return text if "E" not in text else _dec_format(value, "f")


def is_stored(event: object) -> bool:
    """Whether `SqliteStore.write` keeps ``event`` (sinks filter with it before batching)."""
    if isinstance(event, Kline):
        return event.closed
    return isinstance(event, Trade | MarkPrice | Reconcile)


class NotAStore(sqlite3.DatabaseError):
    """A file opened read-only holds no trio-feed tables (``user_version`` 0)."""


@frozen(slots=True)
class ResumePoints:
    """Where the stored record ends, for the feed to continue from after a restart."""

    #: Per (symbol, interval): the stored closed kline with the greatest open_time.
    klines: Mapping[tuple[str, str], Kline]
    #: Per symbol: the greatest stored aggregated-trade id.
    trade_ids: Mapping[str, int]


class SqliteStore:
    """One SQLite database file holding the stored events (see the module docstring).

    Not thread-safe by itself: it may be called from any thread (``check_same_thread`` is
    off, for trio's worker threads) but only one call at a time; the sink serialises its
    calls with a `trio.CapacityLimiter` of 1.

    ``readonly`` opens an existing file for reading only (no directory, file or schema is
    created; `write` fails), e.g. for history queries beside a running sink: WAL mode
    lets readers and the one writer proceed without blocking each other.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        readonly: bool = False,
    ) -> None:
        self.path = str(path)
        self.readonly = readonly
        if readonly:
            uri = Path(path).resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=busy_timeout
            )
        else:
            if self.path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; `write` issues its own
            # BEGIN IMMEDIATE, so the write lock is taken up front (and waited for under
            # busy_timeout) instead of failing mid-transaction on a lock upgrade.
            conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=busy_timeout
            )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if readonly:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    raise NotAStore(f"{self.path}: holds no trio-feed tables")
                _check_version(self.path, version)
            else:
                # WAL: readers (history queries, other tools) never block the writer, and
                # a commit is one append, not a rewrite of the pages. NORMAL sync is
                # durable across application crashes (an OS crash may lose the last
                # commits, which the feed re-fetches from REST on restart).
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                _create_schema(conn, self.path)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # ---- writing --------------------------------------------------------------------------

    def write(self, events: Iterable[object]) -> int:
        """Store the storable ``events`` in one transaction; return how many there were.

        Events that are not stored (see `is_stored`) are skipped. On any error the whole
        transaction is rolled back and the error re-raised: nothing of the batch is kept,
        and writing it again later is safe, since every insert is idempotent.
        """
        klines: list[tuple[Any, ...]] = []
        trades: list[tuple[Any, ...]] = []
        marks: list[tuple[Any, ...]] = []
        reconciles: list[tuple[Any, ...]] = []
        dec = _dec
        # isinstance narrows each event's type without a cast() call: this loop is the
        # sink's hot path, where a few hundred ns per event show at 100k events/s.
        for e in events:
            if isinstance(e, Trade):
                trades.append(
                    (
                        e.exchange,
                        e.symbol,
                        e.id,
                        dec(e.price),
                        dec(e.qty),
                        e.first_trade_id,
                        e.last_trade_id,
                        e.time,
                        int(e.buyer_is_maker),
                        e.source,
                    )
                )
            elif isinstance(e, Kline):
                if e.closed:
                    klines.append(
                        (
                            e.exchange,
                            e.symbol,
                            e.interval,
                            e.open_time,
                            e.close_time,
                            dec(e.open),
                            dec(e.high),
                            dec(e.low),
                            dec(e.close),
                            dec(e.volume),
                            dec(e.quote_volume),
                            e.trades,
                            dec(e.taker_buy_volume),
                            dec(e.taker_buy_quote_volume),
                            e.source,
                            e.revision,
                        )
                    )
            elif isinstance(e, MarkPrice):
                marks.append(
                    (
                        e.exchange,
                        e.symbol,
                        e.time,
                        dec(e.mark_price),
                        dec(e.index_price),
                        dec(e.funding_rate),
                        e.next_funding_time,
                    )
                )
            elif isinstance(e, Reconcile):
                reconciles.append(
                    (
                        getattr(e, "exchange", None) or None,
                        e.symbol,
                        e.interval,
                        e.open_time,
                        json.dumps(e.mismatches),
                        e.action,
                    )
                )
        count = len(klines) + len(trades) + len(marks) + len(reconciles)
        if not count:
            return 0
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if klines:
                conn.executemany(_INSERT_KLINE, klines)
            if trades:
                conn.executemany(_INSERT_TRADE, trades)
            if marks:
                conn.executemany(_INSERT_MARK_PRICE, marks)
            if reconciles:
                conn.executemany(_INSERT_RECONCILE, reconciles)
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (e.g. disk full) may leave the transaction open; a failed
            # statement leaves it open too. Either way nothing of this batch may stay.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth reporting
            raise
        return count

    # ---- reading --------------------------------------------------------------------------

    def last_closed_klines(self, venue: str) -> dict[tuple[str, str], Kline]:
        """Per (symbol, interval) of ``venue``: the stored kline with the greatest open_time."""
        rows = self._conn.execute(
            f"""
            SELECT {_KLINE_COLUMNS} FROM klines
            JOIN (
                SELECT symbol AS s, interval AS i, MAX(open_time) AS t
                FROM klines WHERE venue = ? GROUP BY symbol, interval
            ) ON venue = ? AND symbol = s AND interval = i AND open_time = t
            """,
            (venue, venue),
        ).fetchall()
        return {(row[1], row[2]): _kline(row) for row in rows}

    def last_trade_ids(self, venue: str) -> dict[str, int]:
        """Per symbol of ``venue``: the greatest stored trade id."""
        rows = self._conn.execute(
            "SELECT symbol, MAX(id) FROM trades WHERE venue = ? GROUP BY symbol", (venue,)
        ).fetchall()
        return {symbol: last for symbol, last in rows}

    def klines(
        self,
        venue: str,
        symbol: str,
        interval: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int | None = None,
    ) -> list[Kline]:
        """Stored klines with ``start <= open_time <= end`` (both optional, inclusive, as in
        exchange REST APIs), open_time ascending. With ``limit``: the first ``limit`` from
        ``start``, or, without ``start``, the last ``limit`` up to ``end``."""
        rows = self._range(
            "klines", _KLINE_COLUMNS, "open_time", [venue, symbol, interval], start, end, limit
        )
        return [_kline(row) for row in rows]

    def trades(
        self,
        venue: str,
        symbol: str,
        *,
        from_id: int | None = None,
        limit: int | None = None,
    ) -> list[Trade]:
        """Stored trades with ``id >= from_id``, id ascending. With ``limit``: the first
        ``limit`` from ``from_id``, or, without ``from_id``, the last ``limit``."""
        rows = self._range("trades", _TRADE_COLUMNS, "id", [venue, symbol], from_id, None, limit)
        return [_trade(row) for row in rows]

    def _range(
        self,
        table: str,
        columns: str,
        order: str,
        key: list[Any],
        low: int | None,
        high: int | None,
        limit: int | None,
    ) -> list[tuple[Any, ...]]:
        """Rows of ``table`` for one key (venue, symbol[, interval]) with ``low <= order <=
        high``, ascending. With ``limit``: the first ``limit`` from ``low``, or, without
        ``low``, the last ``limit`` up to ``high``."""
        names = ("venue", "symbol", "interval")[: len(key)]
        where = " AND ".join(f"{name} = ?" for name in names)
        params: list[Any] = list(key)
        if low is not None:
            where += f" AND {order} >= ?"
            params.append(low)
        if high is not None:
            where += f" AND {order} <= ?"
            params.append(high)
        newest_first = limit is not None and low is None
        sql = f"SELECT {columns} FROM {table} WHERE {where} ORDER BY {order}"
        if newest_first:
            sql += " DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows: list[tuple[Any, ...]] = self._conn.execute(sql, params).fetchall()
        if newest_first:
            rows.reverse()
        return rows

    def mark_prices(self, venue: str, symbol: str) -> list[MarkPrice]:
        """Stored mark prices of one symbol, time ascending."""
        rows = self._conn.execute(
            "SELECT venue, symbol, mark_price, index_price, funding_rate, next_funding_time, "
            "time FROM mark_prices WHERE venue = ? AND symbol = ? ORDER BY time",
            (venue, symbol),
        ).fetchall()
        return [
            MarkPrice(v, s, Decimal(mp), Decimal(ip), Decimal(fr), nft, t)
            for v, s, mp, ip, fr, nft, t in rows
        ]

    def reconciliations(
        self, venue: str | None = None, symbol: str | None = None
    ) -> list[Reconcile]:
        """Stored reconciliation events (all, or of one venue and/or symbol), in the order
        written. (No stored row has a venue until `Reconcile` carries an ``exchange``.)"""
        conditions = [(c, v) for c, v in (("venue", venue), ("symbol", symbol)) if v is not None]
        sql = "SELECT symbol, interval, open_time, mismatches, action FROM reconciliations"
        if conditions:
            sql += " WHERE " + " AND ".join(f"{column} = ?" for column, _ in conditions)
        rows = self._conn.execute(sql + " ORDER BY id", [v for _, v in conditions]).fetchall()
        return [Reconcile(s, i, t, tuple(json.loads(m)), a) for s, i, t, m, a in rows]

    def count_klines(
        self, venue: str | None = None, symbol: str | None = None, interval: str | None = None
    ) -> int:
        """How many klines are stored (all, or of the given venue/symbol/interval)."""
        return self._count("klines", venue=venue, symbol=symbol, interval=interval)

    def count_trades(self, venue: str | None = None, symbol: str | None = None) -> int:
        """How many trades are stored (all, or of the given venue/symbol)."""
        return self._count("trades", venue=venue, symbol=symbol)

    def _count(self, table: str, **keys: str | None) -> int:
        # Column and table names come from this module only, never from callers' data.
        conditions = [(column, value) for column, value in keys.items() if value is not None]
        sql = f"SELECT COUNT(*) FROM {table}"
        if conditions:
            sql += " WHERE " + " AND ".join(f"{column} = ?" for column, _ in conditions)
        count: int = self._conn.execute(sql, [value for _, value in conditions]).fetchone()[0]
        return count

    def resume_points(self, venue: str) -> ResumePoints:
        """`last_closed_klines` and `last_trade_ids` of ``venue`` together."""
        return ResumePoints(
            klines=self.last_closed_klines(venue), trade_ids=self.last_trade_ids(venue)
        )

    def close(self) -> None:
        """Close the connection (WAL is checkpointed into the main file by SQLite)."""
        self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_resume_points(path: str | Path, venue: str) -> ResumePoints:
    """The resume points of ``venue`` in the store at ``path``, read-only.

    Empty if the file does not exist (it is not created: the sink creates it when it
    starts) or holds no trio-feed tables yet. Blocking: call it in a worker thread.
    """
    if not Path(path).is_file():
        return ResumePoints(klines={}, trade_ids={})
    try:
        store = SqliteStore(path, readonly=True)
    except NotAStore:
        return ResumePoints(klines={}, trade_ids={})
    with store:
        return store.resume_points(venue)


def _create_schema(conn: sqlite3.Connection, path: str) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    _check_version(path, version)
    if version == SCHEMA_VERSION:
        return  # the usual case: opening an existing store takes no write lock
    # IMMEDIATE: two processes opening a new file at once must not both create it, so the
    # version is read again under the write lock.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        _check_version(path, version)
        if version < SCHEMA_VERSION:
            # Statement by statement: executescript() would COMMIT our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_version(path: str, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"{path}: store schema version {version} is newer than this trio-feed's "
            f"({SCHEMA_VERSION}); upgrade trio-feed or use another file"
        )


def _kline(row: tuple[Any, ...]) -> Kline:
    (venue, symbol, interval, open_time, close_time, o, h, lo, c, v, qv, n, tbv, tbqv, src, rev) = (
        row
    )
    return Kline(
        exchange=venue,
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=close_time,
        open=Decimal(o),
        high=Decimal(h),
        low=Decimal(lo),
        close=Decimal(c),
        volume=Decimal(v),
        quote_volume=Decimal(qv),
        trades=n,
        taker_buy_volume=Decimal(tbv),
        taker_buy_quote_volume=Decimal(tbqv),
        closed=True,
        source=cast(Source, src),
        revision=rev,
    )


def _trade(row: tuple[Any, ...]) -> Trade:
    venue, symbol, id_, price, qty, first_id, last_id, time, buyer_is_maker, src = row
    return Trade(
        exchange=venue,
        symbol=symbol,
        id=id_,
        price=Decimal(price),
        qty=Decimal(qty),
        first_trade_id=first_id,
        last_trade_id=last_id,
        time=time,
        buyer_is_maker=bool(buyer_is_maker),
        source=cast(Source, src),
    )
