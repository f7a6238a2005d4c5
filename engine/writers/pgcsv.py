"""PostgreSQL's CSV (COPY ... TO STDOUT WITH (FORMAT csv)) read into Arrow, for any value size.

Arrow's CSV reader needs every record inside one block; with a fixed block
(1 MiB by default) a value larger than that fails ("straddling object straddles
two block boundaries"). So the COPY stream is regrouped into pieces that end on
a record, and each piece is parsed as one block of its own size: a piece holds
at least one whole record, however large its values are.
"""

import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv

MIN_BLOCK_BYTES = 1 << 20


def records_end(buffer: bytes) -> int:
    """Length of the longest prefix of `buffer` made of whole CSV records.

    A newline ends a record only outside quotes, i.e. after an even number of
    quote characters (an escaped quote is doubled, so it counts twice).
    """
    quotes = buffer.count(b'"')
    end = len(buffer)
    while True:
        newline = buffer.rfind(b"\n", 0, end)
        if newline < 0:
            return 0
        quotes -= buffer.count(b'"', newline + 1, end)
        if quotes % 2 == 0:
            return newline + 1
        end = newline


def pieces(chunks, piece_bytes: int) -> Iterator[bytes]:
    """Regroup COPY chunks into pieces of about `piece_bytes` (more when one record
    is larger) that end on a record."""
    buffer = bytearray()  # appended to in place: chunks may be as small as one row
    for chunk in chunks:
        buffer += chunk
        if len(buffer) >= piece_bytes:
            end = records_end(buffer)
            if end:
                yield bytes(buffer[:end])
                del buffer[:end]
    if buffer:
        yield bytes(buffer)


def read_table(data: bytes, width: int) -> pa.Table:
    """One piece of PostgreSQL CSV to text columns c0..cN: an unquoted empty field
    is NULL, a quoted one ("") the empty string."""
    names = [f"c{i}" for i in range(width)]
    return pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(
            column_names=names, block_size=max(MIN_BLOCK_BYTES, len(data) + 1), use_threads=False
        ),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def record_batches(
    pieces_, width: int, failures: list, oversized: list, oversized_bytes: int
) -> pa.RecordBatchReader:
    """The pieces (see pieces()) as a reader of text record batches; memory holds one
    piece (and its parsed batch) at a time. The reader ends early at a piece larger
    than `oversized_bytes` (one huge row), which it leaves in `oversized` for the
    caller to load under a larger memory cap. An error of the stream itself (the
    source went away) is appended to `failures` (without its traceback, which would
    keep the stream's generators, and so an unfinished COPY, alive), so that the
    caller can raise it as it is rather than as the consumer's wrapped error."""
    schema = pa.schema([(f"c{i}", pa.string()) for i in range(width)])

    def batches():
        try:
            for piece in pieces_:
                if len(piece) > oversized_bytes:
                    oversized.append(piece)
                    return
                yield from read_table(piece, width).to_batches()
        except Exception as error:
            failures.append(error.with_traceback(None))
            raise

    return pa.RecordBatchReader.from_batches(schema, batches())
