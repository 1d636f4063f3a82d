"""Durations as every command's --timeout reads them: units, and a bare number in the command's unit."""
import click
import pytest

from trtx.cli.options import Duration


@pytest.mark.parametrize("text,bare_unit,seconds", [
    ("90s", "m", 90), ("30m", "s", 1800), ("1.5h", "s", 5400), ("2h30m", "s", 9000), ("1h 0.5m 3s", "m", 3633),
    ("45", "s", 45), ("45", "m", 2700), ("0.05", "m", 3), (".5", "h", 1800), ("10M", "s", 600)])
def test_durations_convert_to_seconds(text, bare_unit, seconds):
    assert Duration(bare_unit).convert(text, None, None) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "5x", "-3", "3 m s", "1e3", "m", "inf", "0", "0s0m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(click.BadParameter):
        Duration("s").convert(text, None, None)
