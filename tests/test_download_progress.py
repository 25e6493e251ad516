"""The command line's download progress bar (cli.studio.download_progress): bytes done of the total, the rate and
the time left, drawn on the error console; none at all when asked for JSON."""

from __future__ import annotations

import io

from rich.console import Console

from cli.studio import download_progress


def test_the_bar_shows_bytes_rate_and_time_left() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    with download_progress(console, enabled=True) as listener:
        assert listener is not None
        for done in range(0, 3_000_001, 500_000):
            listener("v1-5-pruned.safetensors", done, 3_000_000)
    shown = buffer.getvalue()
    assert "downloading v1-5-pruned.safetensors" in shown
    assert "3.0/3.0 MB" in shown  # bytes done of the total
    assert "/s" in shown  # the rate
    assert "0:00:00" in shown  # time left


def test_no_bar_and_no_listener_when_quiet() -> None:
    buffer = io.StringIO()
    with download_progress(Console(file=buffer, force_terminal=True), enabled=False) as listener:
        assert listener is None
    assert buffer.getvalue() == ""


def test_nothing_is_drawn_when_nothing_downloads() -> None:
    buffer = io.StringIO()
    with download_progress(Console(file=buffer, force_terminal=True), enabled=True):
        pass
    assert buffer.getvalue() == ""
