"""PostgreSQL log sequence numbers (LSNs): the text PostgreSQL shows, '16/B374D848',
and the integer the engine compares, subtracts and stores in checkpoints.

An LSN is a position in the WAL stream, not a size; the difference of two is a size.
"""


def parse_lsn(text: str | None) -> int | None:
    """'16/B374D848' -> its integer position; None (or '') stays None: a server that
    reported no position (a slot without restart_lsn, a failed probe)."""
    if not text:
        return None
    high, slash, low = text.partition("/")
    try:
        if not slash:
            raise ValueError
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an LSN (expected two hexadecimal numbers such as '16/B374D848')"
        ) from None


def format_lsn(position: int | None) -> str:
    """The integer position -> '16/B374D848', as PostgreSQL writes it; None -> ''."""
    if position is None:
        return ""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
