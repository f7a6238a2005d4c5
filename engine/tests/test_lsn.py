"""One LSN codec for the probe, the runner, the writers and the run records."""

import pytest

from engine.lsn import format_lsn, parse_lsn


def test_an_lsn_reads_and_prints_as_postgresql_writes_it():
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert format_lsn(0) == "0/0"
    assert parse_lsn("0/0") == 0


def test_positions_compare_and_subtract_as_numbers_across_the_slash():
    assert parse_lsn("1/0") - parse_lsn("0/FFFFFFFF") == 1


def test_a_missing_position_stays_missing():
    assert parse_lsn(None) is None
    assert parse_lsn("") is None
    assert format_lsn(None) == ""


@pytest.mark.parametrize("text", ["16B374D848", "16/XYZ", "/"])
def test_a_malformed_lsn_is_refused_naming_the_text(text):
    with pytest.raises(ValueError, match="is not an LSN"):
        parse_lsn(text)
