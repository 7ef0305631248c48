"""The command line: exit codes, messages, check-config output (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from trio_feed.cli import main

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "feed.toml"
    path.write_text(text)
    return str(path)


def test_check_config_prints_streams_per_connection(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "config" / "binance-usdm.toml")]) == 0
    out, _err = capsys.readouterr()
    assert "valid" in out
    assert "binance-usdm/market/0  wss://fstream.binance.com/market/stream" in out
    assert "binance-usdm/public/1  wss://fstream.binance.com/public/stream" in out
    assert "    btcusdt@kline_1m" in out and "    ethusdt@depth@100ms" in out


def test_check_config_splits_by_pool_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        '[[venues]]\nexchange = "binance-usdm"\nsymbols = ["A1", "B2", "C3"]\n'
        'channels = ["aggTrade", "kline_1m", "depth"]\n'
        "[connection_pool]\nmax_streams_per_connection = 4\n",
    )
    assert main(["check-config", path]) == 0
    out = capsys.readouterr().out
    assert "9 streams on 3 connection(s)" in out
    assert "binance-usdm/market/0" in out and "(3 streams)" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[venues]]\nexchange = "nope"\nsymbols = ["A"]\nchannels = ["aggTrade"]\n',
         "venues[0].exchange"),
        ('[[venues]]\nexchange = "binance-usdm"\nsymbols = ["A"]\nchannels = ["x"]\n',
         "venues[0].channels[0]"),
        ('[[venues]]\nexchange = "binance-usdm"\nsymbols = ["A"]\nchannels = ["aggTrade"]\n'
         "[reconnect]\nbase_delay = -1\n", "reconnect.base_delay: must be > 0"),
        ('[[venues]]\nexchange = "binance-usdm"\nsymbols = ["A","B","C"]\n'
         'channels = ["aggTrade"]\n[connection_pool]\nmax_connections = 1\n'
         "max_streams_per_connection = 2\n", "needs 2 connections"),
        ("this is not toml", "invalid TOML"),
    ],
)  # fmt: skip
def test_bad_config_exits_2_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    for argv in (["check-config", path], ["run", "--config", path]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert expected in err
        assert "Traceback" not in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", "/nonexistent/feed.toml"]) == 2
    err = capsys.readouterr().err
    assert "/nonexistent/feed.toml" in err and "not found" in err


def test_list_venues(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--list-venues"]) == 0
    out = capsys.readouterr().out
    # One header line per venue, sorted by name (more venues may sort before binance-usdm).
    headers = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert "binance-usdm" in headers and headers == sorted(headers)
    assert "kline_<interval>" in out and "1m" in out


def test_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--config", "x.toml", "--duration", "-3"])
    assert info.value.code == 2
    assert "positive number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "tty", "expected"),
    [
        ([], False, "-"),  # piped or redirected: JSON lines on stdout
        ([], True, None),  # a terminal: the live view only
        (["--jsonl", "out.jsonl"], False, "out.jsonl"),
        (["--jsonl", "-"], True, "-"),
    ],
)
def test_run_writes_json_lines_to_stdout_unless_it_is_a_terminal(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    tty: bool,
    expected: str | None,
) -> None:
    from trio_feed import cli

    path = write(
        tmp_path,
        'sinks = []\n[[venues]]\nexchange = "binance-usdm"\nsymbols = ["A1"]\n'
        'channels = ["aggTrade"]\n',
    )
    seen: list[str | None] = []

    async def fake_run(config: object, jsonl: str | None, duration: float | None) -> int:
        seen.append(jsonl)
        return 0

    monkeypatch.setattr(cli, "_run", fake_run)  # no network: only what main() decides
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    assert main(["run", "--config", path, *argv]) == 0
    assert seen == [expected]
