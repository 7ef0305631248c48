"""A test venue: Binance USD-M wire format, but connecting to a bare ``/<route>/ws`` URL and
subscribing after the connection opens, the way Bybit, OKX and Bitget work."""

from __future__ import annotations

from collections.abc import Sequence

from trio_feed.venues.base import OutgoingMessage, StreamSpec
from trio_feed.venues.binance_usdm import BinanceUsdmAdapter


class SubscribeAfterConnectAdapter(BinanceUsdmAdapter):
    name = "binance-usdm-subscribing"

    def connect_url(self, ws_url: str, route: str, streams: Sequence[StreamSpec]) -> str:
        return f"{ws_url}/{route}/ws"

    def open_messages(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        # One stream per request, to exercise waiting for several acknowledgements.
        messages: list[OutgoingMessage] = []
        for i, spec in enumerate(streams):
            messages += self.subscribe([spec], first_request_id + i)
        return messages
