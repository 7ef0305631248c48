"""Testing tools: an in-process Binance USD-M exchange simulator, like `trio.testing`.

`FakeExchange` speaks the real wire protocol (trio-websocket over memory streams or a loopback
TCP port; REST through an httpx transport or HTTP/1.1), driven by `FakeMarket`, a seeded,
deterministic market whose history (`FakeMarket.trades`, `FakeMarket.klines`,
`FakeMarket.depth_steps`, ...) is the truth to compare a feed's output with. Use it to test a
feed, or your own strategy, in virtual time::

    import httpx, trio
    from trio_websocket import wrap_client_stream
    from trio_feed.testing import FakeExchange

    async def test_my_strategy(autojump_clock):
        async with FakeExchange(seed=1) as fake, trio.open_nursery() as nursery:
            path = "/market/stream?streams=btcusdt@aggTrade/btcusdt@kline_1m"
            stream = await fake.connect("wss://fstream.binance.com" + path)
            ws = await wrap_client_stream(nursery, stream, "fstream.binance.com", path)
            frame = await ws.get_message()   # '{"stream":"btcusdt@kline_1m","data":{...}}'
            async with httpx.AsyncClient(transport=fake.rest_transport,
                                         base_url="https://fapi.binance.com") as rest:
                bars = (await rest.get("/fapi/v1/klines?symbol=BTCUSDT&interval=1m")).json()
            fake.drop_connections()          # and many more faults: see FakeExchange
            nursery.cancel_scope.cancel()

Beyond trading, the fake models what a long-running feed meets: new listings and
delistings (`FakeExchange.list_symbol`, `FakeExchange.delist_symbol`), server rotations
(`FakeExchange.announce_shutdown`, closing after ``shutdown_grace``), dropped, refused,
black-holed and hanging connections (`FakeExchange.ignore_close_handshake`), the
connection-attempt and incoming-message limits, silent or stalled streams
(`FakeExchange.silence`, `FakeExchange.stall_connection_streams`), order-book faults
(skipped, duplicated, reordered and distorted diffs, stale REST snapshots) with the true book
at every published update id (`FakeMarket.book_at`), and REST weight budgets
(`FakeExchange.rest_weight_requested_max`). `ConnectionRecord` tells a test what each
connection saw and did.

Other venues have fakes of their own on the same market and the same seams (``connect``,
``rest_transport``, ``now_ms``): `FakeBinanceSpot`, `FakeBybit` (linear and spot), `FakeOkx`,
`FakeBitget` (USDT futures and spot), and `FakeGateway` (a token-checking in-house JSON
gateway); `trio_feed.testing.proxies` has loopback HTTP CONNECT and SOCKS5 proxies.

Modules: `records` (what the market publishes), `market` (the simulation), `wire` (Binance
stream names and payloads), `rest` (the REST API), `http` (the loopback HTTP server) and
`exchange` (the Trio shell).
"""

from .binance_spot import FakeBinanceSpot as FakeBinanceSpot
from .bitget import FakeBitget as FakeBitget
from .bybit import FakeBybit as FakeBybit
from .exchange import ConnectionRecord as ConnectionRecord
from .exchange import FakeExchange as FakeExchange
from .gateway import FakeGateway as FakeGateway
from .market import FakeMarket as FakeMarket
from .records import KLINE_INTERVALS as KLINE_INTERVALS
from .records import AggTrade as AggTrade
from .records import BestQuote as BestQuote
from .records import BookSnapshot as BookSnapshot
from .records import DepthDistortion as DepthDistortion
from .records import DepthStep as DepthStep
from .records import KlineBar as KlineBar
from .records import MarketEvent as MarketEvent
from .records import MarkSnapshot as MarkSnapshot
from .records import StaleSnapshot as StaleSnapshot
from .records import SymbolSpec as SymbolSpec
from .records import kline_open_time as kline_open_time
from .rest import FakeRestApi as FakeRestApi
from .rest import RestRequestRecord as RestRequestRecord
from .rest import RestResponse as RestResponse

__all__ = [
    "KLINE_INTERVALS",
    "AggTrade",
    "BestQuote",
    "BookSnapshot",
    "ConnectionRecord",
    "DepthDistortion",
    "DepthStep",
    "FakeBinanceSpot",
    "FakeBitget",
    "FakeBybit",
    "FakeExchange",
    "FakeGateway",
    "FakeMarket",
    "FakeRestApi",
    "KlineBar",
    "MarkSnapshot",
    "MarketEvent",
    "RestRequestRecord",
    "RestResponse",
    "StaleSnapshot",
    "SymbolSpec",
    "kline_open_time",
]
