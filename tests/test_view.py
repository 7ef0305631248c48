"""Tests of trio_feed.view: the status tables, rendered to a recording console."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
from rich.console import Console
from trio_feed.runtime.status import FeedStatus, SymbolStatus
from trio_feed.view import quality_style, render_status

from test_monitoring import MARKET, PUBLIC, connection, feed_status, symbol, venue


def render(status: FeedStatus, rates: dict[str, float] | None = None, **kw: float) -> Console:
    console = Console(
        file=io.StringIO(), width=160, record=True, force_terminal=True, color_system="standard"
    )
    console.print(render_status(status, rates or {}, **kw))
    return console


def text_of(status: FeedStatus, rates: dict[str, float] | None = None) -> str:
    return render(status, rates).export_text(styles=False)


def row(text: str, *needles: str) -> str:
    """The one line of ``text`` holding every needle."""
    (line,) = [line for line in text.splitlines() if all(n in line for n in needles)]
    return line


def cells(line: str) -> list[str]:
    """The cells of a table line (a header's separators are heavy, a row's light)."""
    return [cell.strip() for cell in re.split("[│┃]", line.strip().strip("┃│"))]


def coloured(line: str, colour: str, value: str) -> bool:
    """Whether ``value`` is printed in the ANSI ``colour`` (its padding may be too)."""
    codes = {"green": 32, "yellow": 33, "red": 31}
    return re.search(rf"\x1b\[{codes[colour]}m *{re.escape(value)}", line) is not None


def test_connection_rows() -> None:
    status = feed_status(
        connections=(
            connection(),
            connection(PUBLIC, state="RECONNECTING", retry=4, last_message_age=None, rotations=0),
        )
    )
    text = text_of(status, {MARKET: 1234.4})
    header = cells(row(text, "connection", "state"))
    assert header == [
        "connection",
        "state",
        "streams",
        "msgs/s",
        "last msg",
        "retry",
        "reconnects",
        "rotations",
        "stale",
        "malformed",
    ]
    assert cells(row(text, MARKET)) == [
        MARKET, "SUBSCRIBED", "2", "1,234", "0.2s", "0", "2", "3", "1", "1"
    ]  # fmt: skip
    assert cells(row(text, PUBLIC)) == [
        PUBLIC, "RECONNECTING", "2", "0", "-", "4", "2", "0", "1", "1"
    ]  # fmt: skip


def test_symbol_rows_worst_quality_first() -> None:
    status = feed_status(
        symbols=(
            SymbolStatus(
                venue="binance-usdm",
                symbol="BTCUSDT",
                quality=0.95,
                reason="ok",
                last_close=Decimal("64123.10"),
            ),
            SymbolStatus(
                venue="binance-usdm",
                symbol="ETHUSDT",
                quality=0.2,
                reason="stream down",
                missing_streams=("ethusdt@aggTrade", "ethusdt@kline_1m"),
            ),
        )
    )
    text = text_of(status)
    assert cells(row(text, "venue", "symbol", "quality")) == [
        "venue", "symbol", "quality", "last close", "missing streams", "reason"
    ]  # fmt: skip
    assert cells(row(text, "BTCUSDT")) == ["binance-usdm", "BTCUSDT", "0.95", "64123.10", "", "ok"]
    assert cells(row(text, "ETHUSDT")) == [
        "binance-usdm", "ETHUSDT", "0.20", "-", "ethusdt@aggTrade, ethusdt@kline_1m", "stream down"
    ]  # fmt: skip
    assert text.index("ETHUSDT") < text.index("BTCUSDT")


@pytest.mark.parametrize(
    ("quality", "style"),
    [
        (1.0, "green"),
        (0.9, "green"),
        (0.89, "yellow"),
        (0.5, "yellow"),
        (0.49, "red"),
        (0.0, "red"),
    ],
)
def test_quality_style(quality: float, style: str) -> None:
    assert quality_style(quality) == style


def test_quality_style_follows_min_quality() -> None:
    assert quality_style(0.6, min_quality=0.7) == "red"
    assert quality_style(0.75, min_quality=0.7) == "yellow"


def test_quality_is_coloured() -> None:
    status = feed_status(
        symbols=(symbol("AAAUSDT", 0.95), symbol("BBBUSDT", 0.6), symbol("CCCUSDT", 0.1))
    )
    ansi = render(status).export_text(styles=True)
    assert coloured(row(ansi, "AAAUSDT"), "green", "0.95")
    assert coloured(row(ansi, "BBBUSDT"), "yellow", "0.60")
    assert coloured(row(ansi, "CCCUSDT"), "red", "0.10")
    assert not coloured(row(ansi, "CCCUSDT"), "green", "0.10")
    # The threshold is the caller's: 0.6 is red below a min_quality of 0.7.
    ansi = render(status, min_quality=0.7).export_text(styles=True)
    assert coloured(row(ansi, "BBBUSDT"), "red", "0.60")


def test_venue_rows_with_banned_for() -> None:
    text = text_of(feed_status(venues=(venue(),)))
    assert cells(row(text, "venue", "clock offset")) == [
        "venue", "clock offset", "REST calls", "REST errors", "weight used", "banned for",
        "last error",
    ]  # fmt: skip
    assert cells(row(text, "-12 ms")) == [
        "binance-usdm", "-12 ms", "40", "5", "321", "13s", "HTTP 429"
    ]  # fmt: skip
    text = text_of(
        feed_status(
            venues=(venue(rest_banned_for=None, rest_used_weight=None, clock_offset_ms=None),)
        )
    )
    assert cells(row(text, "binance-usdm", "40")) == [
        "binance-usdm", "-", "40", "5", "-", "-", "HTTP 429"
    ]  # fmt: skip


def test_empty_status_renders_the_headers() -> None:
    text = text_of(FeedStatus(connections=(), venues=(), subscriptions=0))
    for title in ("connections", "symbols", "venues"):
        assert title in text
