# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The client's hot loops compiled: pgoutput's TupleData read in C, Insert/Update/Delete
folded without message objects (engine.pgoutput.text_row and the steps of
engine.fold.BatchBuilder._fast_change; an Insert's or Update's row read straight into a
copy of the relation's template dict), the stream's per-message loop
(engine.stream._stream_messages), and the writers' helpers (COPY text, binary COPY from
text values and its tail set afterwards, the fresh rows' split, grouping by unchanged
columns, column lists). The Python versions stay the reference and the fallback where this
module is not built; pipelines/tests/test_fold_paths.py, test_pgoutput.py,
test_stream_loops.py and destinations/tests/test_writer_compiled_paths.py hold both to the
same results. Built by scripts/setup.sh."""

import struct as _struct

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Check, PyDict_Copy, PyDict_GetItem, PyDict_Next, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_SetItem
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_CheckExact, PyUnicode_Compare, PyUnicode_DecodeUTF8
from libc.math cimport INFINITY, NAN, isinf
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, free, malloc, realloc, strtod, strtof
from libc.string cimport memcmp, memcpy

cimport cython

from engine.batch import UNCHANGED
from engine.pgoutput import _bad_kind

# engine.fold.FASTFOLD_INTERFACE: raise both when a function is added or changed, so that a
# module built from an older source is not used.
INTERFACE = 7


cdef inline Py_ssize_t _be32(const unsigned char* p) noexcept:
    # signed, as pgoutput's Int32 length (-1 never appears for 't' values)
    return <Py_ssize_t><int>((<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) | (<unsigned int>p[2] << 8) | p[3])


cdef inline unsigned int _ube32(const unsigned char* p) noexcept:
    return (<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) | (<unsigned int>p[2] << 8) | p[3]


cdef object _PAST_END = object()  # _read_value: the tuple runs past its message's end


cdef inline object _read_value(const unsigned char* p, Py_ssize_t size, Py_ssize_t* pos):
    """The TupleData value at *pos, *pos moved past it: its text as str ('t'), None ('n'),
    UNCHANGED ('u'), or _PAST_END where it runs past the message's end."""
    cdef Py_ssize_t at = pos[0], length
    cdef unsigned char kind
    if at >= size:
        return _PAST_END
    kind = p[at]
    if kind == 116:  # 't'
        if at + 5 > size:
            return _PAST_END
        length = _be32(p + at + 1)
        at += 5
        if length < 0 or at + length > size:
            return _PAST_END
        pos[0] = at + length
        return PyUnicode_DecodeUTF8(<const char*>p + at, length, NULL)
    if kind == 110:  # 'n'
        pos[0] = at + 1
        return None
    if kind == 117:  # 'u'
        pos[0] = at + 1
        return UNCHANGED
    _bad_kind(kind)
    return _PAST_END


cdef tuple _text_row(bytes data, Py_ssize_t pos):
    # None when the tuple runs past the message's end: the general path then reports it
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t count, i
    cdef bint unchanged = False
    if pos < 0 or pos + 2 > size:
        return None
    count = <short>((p[pos] << 8) | p[pos + 1])
    pos += 2
    values = []
    for i in range(count):
        value = _read_value(p, size, &pos)
        if value is _PAST_END:
            return None
        if value is UNCHANGED:
            unchanged = True
        values.append(value)
    return values, pos, unchanged


def text_row(data, Py_ssize_t pos):
    """engine.pgoutput.text_row, compiled."""
    if type(data) is not bytes:
        data = bytes(data)
    return _text_row(data, pos)


cdef class FoldState:
    """What the compiled fold reads of its builder for every row change, read once per run
    of row changes: from a builder's attributes at the first change after a message that
    went the general way (every Begin and Commit does), and kept until the next such message.
    A change then reads no attribute of the builder, its relation or its table but the
    counters it moves. Each compiled BatchBuilder holds one (BatchBuilder._fold_state)."""

    cdef bint loaded, usable
    cdef bint wire  # rows kept as WireRow (BatchBuilder.wire_rows)
    cdef object lsn
    cdef dict relations
    cdef object batch
    cdef dict tables
    # the relation of the last change, and its table's changes in this batch
    cdef unsigned int oid
    cdef object state
    cdef list names
    cdef dict template
    cdef tuple positions
    cdef object changes
    cdef dict upserts
    cdef dict deletes
    cdef set fresh

    cpdef forget(self):
        """Drop what was read: the general path may change any of it."""
        self.loaded = False
        self.lsn = self.relations = self.batch = self.tables = None
        self._forget_relation()

    cdef _forget_relation(self):
        self.state = self.names = self.template = self.positions = None
        self.changes = self.upserts = self.deletes = self.fresh = None

    cdef _load(self, builder):
        self.loaded = True
        self.usable = not builder._skip and builder._in_transaction
        self.wire = builder.wire_rows
        self.lsn = builder._lsn
        self.relations = builder._relations
        self.batch = builder.batch
        self.tables = self.batch.tables
        self._forget_relation()

    cdef bint _take_relation(self, builder, unsigned int oid) except -1:
        """The relation of a change: True if its changes may take the fast path."""
        cdef PyObject* found = PyDict_GetItem(self.relations, oid)
        if found == NULL:
            return False
        state = <object>found
        if state is None or not state.fast:
            return False
        if state.predates_copy and self.lsn < state.spec.copied_below_lsn:
            return False
        self.oid = oid
        self.state = state
        self.names = state.names
        self.template = state.row_template
        self.positions = state.key_positions
        self.changes = None
        return True

    cdef object _table_changes(self, builder):
        """BatchBuilder._changes: this table's changes in the batch, counted."""
        cdef PyObject* found
        batch = self.batch
        if self.changes is None:
            found = PyDict_GetItem(self.tables, self.state.table_key)
            if found == NULL:
                changes = builder._changes(self.state)  # made, and counted, the general way
            else:
                changes = <object>found
                batch.changes += 1
            if self.wire:
                changes.wire_rows = True
            self.changes = changes
            self.upserts = changes.upserts
            self.deletes = changes.deletes
            self.fresh = changes.fresh
            return changes
        batch.changes += 1
        return self.changes


def feed(builder, data):
    """engine.fold.BatchBuilder.feed, compiled."""
    cdef FoldState state = builder._fold_state
    cdef char kind
    builder.messages += 1
    builder.batch.bytes_read += len(data)
    if type(data) is not bytes:
        data = bytes(data)
    kind = PyBytes_AS_STRING(data)[0] if PyBytes_GET_SIZE(data) else 0
    if kind == 73 or kind == 85 or kind == 68:  # Insert, Update, Delete
        try:
            if _fast_change(builder, state, data):
                return
        except BaseException:
            state.forget()
            raise
    state.forget()
    builder._feed_message(data)


cdef object _key_of(list values, tuple positions):
    # the key tuple from a value list, by the key columns' positions (_RelationState.key_positions)
    cdef Py_ssize_t i, count = PyTuple_GET_SIZE(positions)
    key = PyTuple_New(count)
    for i in range(count):
        value = values[<Py_ssize_t>(<object>PyTuple_GET_ITEM(positions, i))]
        Py_INCREF(value)
        PyTuple_SET_ITEM(key, i, value)
    return key


cdef inline Py_ssize_t _values_at(const unsigned char* p, Py_ssize_t size, Py_ssize_t pos, list names) noexcept:
    """Where the values of the TupleData at pos begin, if it has the relation's column count;
    else -1 (the general path reports what is wrong)."""
    if pos < 0 or pos + 2 > size or <short>((p[pos] << 8) | p[pos + 1]) != PyList_GET_SIZE(names):
        return -1
    return pos + 2


cdef tuple _row_and_key(bytes data, Py_ssize_t pos, list names, dict template, tuple positions):
    """An Insert's or Update's new tuple read straight into its row dict (a copy of the
    relation's template, whose keys are the column names: no value list, no zip) and its
    key tuple. None where the general path must decide: a tuple that runs past the
    message's end, an UNCHANGED value, a column count other than the relation's."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t count, i, k, key_count = PyTuple_GET_SIZE(positions)
    cdef PyObject* found
    pos = _values_at(p, size, pos, names)
    if pos < 0:
        return None
    count = PyList_GET_SIZE(names)
    row = PyDict_Copy(template)
    for i in range(count):
        value = _read_value(p, size, &pos)
        if value is _PAST_END or value is UNCHANGED:
            return None
        if value is not None:  # else the template's None stays
            PyDict_SetItem(row, <object>PyList_GET_ITEM(names, i), value)
    key = PyTuple_New(key_count)
    for k in range(key_count):
        found = PyDict_GetItem(row, <object>PyList_GET_ITEM(
            names, <Py_ssize_t>(<object>PyTuple_GET_ITEM(positions, k))))
        value = None if found == NULL else <object>found
        Py_INCREF(value)
        PyTuple_SET_ITEM(key, k, value)
    return row, key


@cython.no_gc
@cython.final
@cython.auto_pickle(False)
cdef class WireRow:
    """An Insert's or Update's new tuple as pgoutput sent it (text or NULL values, none
    UNCHANGED), kept as the message's bytes for a writer that reads rows so
    (BatchBuilder.wire_rows): copy_binary reads its values where they are, where a row
    dict costs a dict and a str per value to make, read and free. Whatever reads rows by
    column makes it a dict first (as_dict; TableChanges.materialize)."""

    cdef readonly bytes data
    cdef readonly Py_ssize_t start  # where the TupleData begins (its column count)
    cdef readonly dict template  # the relation's row template when it was read: the columns, in order

    def as_dict(self):
        """The row dict the fold would have made: {column: str or None}."""
        read = None
        if self.data is not None and self.template is not None:
            read = _row_and_key(self.data, self.start, list(self.template), self.template, ())
        if read is None:
            raise ValueError("a WireRow whose tuple is not its template's")
        return read[0]


cdef tuple _wire_row_and_key(bytes data, Py_ssize_t pos, list names, dict template, tuple positions):
    """_row_and_key for a builder that keeps rows as WireRow: the tuple checked as
    _row_and_key checks it, and only its key's values decoded (text that is not UTF-8
    elsewhere in the row fails at the destination's COPY, not here)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t start = pos, count, i, k, length, key_count = PyTuple_GET_SIZE(positions)
    cdef unsigned char kind
    cdef WireRow row
    pos = _values_at(p, size, pos, names)
    if pos < 0:
        return None
    count = PyList_GET_SIZE(names)
    values = [None] * key_count  # the key's values, in the key's order
    for i in range(count):
        if pos >= size:
            return None
        kind = p[pos]
        if kind == 110:  # 'n'
            pos += 1
            continue
        if kind != 116:  # 'u' (UNCHANGED) or another kind: the general path decides
            return None
        if pos + 5 > size:
            return None
        length = _be32(p + pos + 1)
        if length < 0 or pos + 5 + length > size:
            return None
        for k in range(key_count):
            if <Py_ssize_t>(<object>PyTuple_GET_ITEM(positions, k)) == i:
                values[k] = PyUnicode_DecodeUTF8(<const char*>p + pos + 5, length, NULL)
        pos += 5 + length
    row = WireRow.__new__(WireRow)
    row.data = data
    row.start = start
    row.template = template
    return row, tuple(values)


cdef bint _fast_change(builder, FoldState hot, bytes data) except -1:
    cdef const unsigned char* p
    cdef Py_ssize_t size
    cdef unsigned char kind
    cdef dict upserts, deletes
    if not hot.loaded:
        hot._load(builder)
    if not hot.usable:
        return False
    p = <const unsigned char*>PyBytes_AS_STRING(data)
    size = PyBytes_GET_SIZE(data)
    if size < 6:
        return False  # the general path reports what is wrong
    if hot.state is None or hot.oid != _ube32(p + 1):
        if not hot._take_relation(builder, _ube32(p + 1)):
            hot._forget_relation()
            return False
    lsn = hot.lsn
    kind = p[0]
    if kind == 68:  # 'D'
        if p[5] != 75:  # 'K': only the key; 'O' goes the general way
            return False
        row = _text_row(data, 6)
        if row is None:
            return False
        values, _, unchanged = row
        if PyList_GET_SIZE(values) != PyList_GET_SIZE(hot.names):
            return False  # not the relation's columns: the general path reports it
        key = _key_of(values, hot.positions)
        if unchanged or None in key:
            return False
        changes = hot._table_changes(builder)
        upserts = hot.upserts
        if key in upserts:
            del upserts[key]
        hot.deletes[key] = lsn
        changes.deleted += 1
        return True
    if p[5] != 78:  # 'N' new tuple; an Update's old key or row: the general path
        return False
    if hot.wire:
        read = _wire_row_and_key(data, 6, hot.names, hot.template, hot.positions)
    else:
        read = _row_and_key(data, 6, hot.names, hot.template, hot.positions)
    if read is None:
        return False
    row, key = read
    if None in key:
        return False
    changes = hot._table_changes(builder)
    upserts = hot.upserts
    deletes = hot.deletes
    if kind == 73 and key not in upserts and key not in deletes:
        hot.fresh.add(key)
    if deletes and key in deletes:
        del deletes[key]
    upserts[key] = (row, lsn)
    if kind == 73:
        changes.inserted += 1
    else:
        changes.updated += 1
    return True


# -- COPY text for the PostgreSQL writer ------------------------------------------------

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL


cdef struct _Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity
    # NULL: `data` is malloc'd. Else a bytearray whose memory `data` is, grown in place, so
    # that it is what the caller returns: no copy of megabytes into fresh pages at the end.
    PyObject* owner


cdef int _reserve(_Buffer* buffer, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity
    cdef char* data
    if buffer.size + extra <= buffer.capacity:
        return 0
    capacity = max(buffer.size + extra, buffer.capacity * 2, 65536)
    if buffer.owner != NULL:
        PyByteArray_Resize(<object>buffer.owner, capacity)
        data = PyByteArray_AS_STRING(<object>buffer.owner)
    else:
        data = <char*>realloc(buffer.data, capacity)
        if data == NULL:
            raise MemoryError()
    buffer.data = data
    buffer.capacity = capacity
    return 0


cdef int _put(_Buffer* buffer, const char* text, Py_ssize_t length) except -1:
    _reserve(buffer, length)
    memcpy(buffer.data + buffer.size, text, length)
    buffer.size += length
    return 0


cdef int _put_escaped(_Buffer* buffer, const char* text, Py_ssize_t length) except -1:
    # COPY's text format: backslash, tab, newline and carriage return escaped
    cdef Py_ssize_t i
    cdef char c
    cdef char* out
    _reserve(buffer, 2 * length)
    out = buffer.data + buffer.size
    for i in range(length):
        c = text[i]
        if c == 92 or c == 9 or c == 10 or c == 13:
            out[0] = 92
            out[1] = 92 if c == 92 else (116 if c == 9 else (110 if c == 10 else 114))
            out += 2
        else:
            out[0] = c
            out += 1
    buffer.size = out - buffer.data
    return 0


cdef struct _RowWalk:
    Py_ssize_t position
    PyObject* key
    PyObject* value
    bint walking


cdef inline int _start_walk(_RowWalk* walk, object row) except -1:
    if not PyDict_Check(row):  # a WireRow: copy_binary reads it, other readers need its dict
        raise TypeError(f"a row to read by column is a dict, not {type(row).__name__} (TableChanges.materialize)")
    walk.position = 0
    walk.walking = PyDict_Next(row, &walk.position, &walk.key, &walk.value)
    return 0


cdef inline bint _same_name(PyObject* name, PyObject* column) noexcept:
    """The same column name: the same object, or equal strings (the run reads the table's
    current shape from the catalog, whose names are other objects than the fold's)."""
    return name == column or (
        PyUnicode_CheckExact(<object>name) and PyUnicode_CheckExact(<object>column)
        and PyUnicode_Compare(<object>name, <object>column) == 0
    )


cdef inline PyObject* _walk_to(_RowWalk* walk, object row, PyObject* column) noexcept:
    """The row's value of `column` (borrowed; NULL if it has none), the columns asked for in
    order. A row made from its relation's template holds them in this order: walked in step,
    no lookup by name, until a key is not the column's (_same_name)."""
    cdef PyObject* value
    if walk.walking and _same_name(walk.key, column):
        value = walk.value
        walk.walking = PyDict_Next(row, &walk.position, &walk.key, &walk.value)
        return value
    walk.walking = False
    return PyDict_GetItem(row, <object>column)


def copy_text(list rows, tuple columns, str tail):
    """Rows of text values, [({column: str or None}, lsn), ...], as the lines of a text
    COPY: the columns' values, the LSN, then `tail` (already COPY text). A missing
    column is NULL. None if a value is not text (the caller formats those rows itself)."""
    cdef _Buffer buffer
    cdef PyObject* value
    cdef const char* text
    cdef Py_ssize_t length, tail_length
    cdef char number[24]
    cdef int width
    cdef long long lsn
    cdef Py_ssize_t i, count = len(columns)
    cdef _RowWalk walk
    buffer.data = NULL
    buffer.size = buffer.capacity = 0
    buffer.owner = NULL
    tail_text = tail.encode()
    tail_length = len(tail_text)
    try:
        for row, lsn in rows:
            _start_walk(&walk, row)
            for i in range(count):
                value = _walk_to(&walk, row, PyTuple_GET_ITEM(columns, i))
                if value == NULL or <object>value is None:
                    _put(&buffer, b"\\N\t", 3)
                elif type(<object>value) is str:
                    text = PyUnicode_AsUTF8AndSize(<object>value, &length)
                    _put_escaped(&buffer, text, length)
                    _put(&buffer, b"\t", 1)
                else:
                    return None
            width = snprintf(number, 24, "%lld", lsn)
            _put(&buffer, number, width)
            _put(&buffer, tail_text, tail_length)
            _put(&buffer, b"\n", 1)
        return PyBytes_FromStringAndSize(buffer.data, buffer.size)
    finally:
        free(buffer.data)


# -- binary COPY for the PostgreSQL writer -----------------------------------------------
# Text values (as pgoutput sent them, in engine.pgtypes.SESSION_SETTINGS' forms) converted
# to the types' binary forms, so that the destination backend parses no text. Every parser
# is strict: a form it does not fully understand (infinity, BC, NaN for numeric, an
# out-of-range field, a value beyond its limits) rejects the whole COPY, and the writer
# sends it as text, which PostgreSQL then parses (and accepts or refuses) itself. The
# receive functions apply the column's typmod as the input functions do.

cdef enum:
    K_INT2 = 1
    K_INT4
    K_INT8
    K_BOOL
    K_TEXT
    K_JSON
    K_JSONB
    K_NUMERIC
    K_FLOAT4
    K_FLOAT8
    K_DATE
    K_TIMESTAMP
    K_TIMESTAMPTZ
    K_UUID

# engine.pgtypes.BINARY_COPY_KINDS names these
BINARY_KINDS = {
    "int2": K_INT2, "int4": K_INT4, "int8": K_INT8, "bool": K_BOOL, "text": K_TEXT,
    "json": K_JSON, "jsonb": K_JSONB, "numeric": K_NUMERIC,
    "float4": K_FLOAT4, "float8": K_FLOAT8, "date": K_DATE, "timestamp": K_TIMESTAMP,
    "timestamptz": K_TIMESTAMPTZ, "uuid": K_UUID,
}

cdef enum:
    NUMERIC_MAX_DIGITS = 1000  # longer numerics go as text (numeric allows far more)
    NUMERIC_MAX_GROUPS = 253  # base-10000 digits of that many, with padding
    MAX_YEAR = 200000  # timestamps end in 294276 AD; later dates go as text too
    DAYS_TO_2000 = 730425  # from 0000-03-01 to 2000-01-01, where binary dates count from

cdef const char* _COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


cdef int _put_be(_Buffer* buffer, unsigned long long value, int size) except -1:
    cdef int i
    _reserve(buffer, size)
    for i in range(size):
        buffer.data[buffer.size + i] = <char>((value >> (8 * (size - 1 - i))) & 0xFF)
    buffer.size += size
    return 0


cdef inline bint _digit(char c) noexcept:
    return 48 <= c <= 57


cdef inline Py_ssize_t _skip_digits(const char* s, Py_ssize_t i, Py_ssize_t n) noexcept:
    """The position after the run of digits that starts at i."""
    while i < n and _digit(s[i]):
        i += 1
    return i


cdef bint _parse_int(const char* s, Py_ssize_t n, long long high, long long* out) noexcept:
    # -?[0-9]{1,19} within [-high - 1, high], as intNout writes it
    cdef Py_ssize_t i = 0
    cdef unsigned long long value = 0
    cdef bint negative = n > 0 and s[0] == 45
    if negative:
        i = 1
    if i == n or n - i > 19:
        return False
    while i < n:
        if not _digit(s[i]):
            return False
        value = value * 10 + <unsigned long long>(s[i] - 48)
        i += 1
    if value > <unsigned long long>high + (1 if negative else 0):
        return False
    out[0] = <long long>(0ULL - value) if negative else <long long>value
    return True


cdef int _int(_Buffer* buffer, const char* s, Py_ssize_t n, int size) except -1:
    cdef long long value
    cdef long long high = 32767 if size == 2 else (2147483647 if size == 4 else 9223372036854775807LL)
    if not _parse_int(s, n, high, &value):
        return 0
    _put_be(buffer, size, 4)
    _put_be(buffer, <unsigned long long>value, size)
    return 1


cdef int _bool(_Buffer* buffer, const char* s, Py_ssize_t n) except -1:
    if n != 1 or (s[0] != 116 and s[0] != 102):  # boolout: 't' or 'f'
        return 0
    _put_be(buffer, 1, 4)
    _put_be(buffer, 1 if s[0] == 116 else 0, 1)
    return 1


cdef int _bytes(_Buffer* buffer, const char* s, Py_ssize_t n, int prefix) except -1:
    # text-like, json: the UTF-8 bytes (converted to the server's encoding as text COPY's
    # are); jsonb: its version byte first
    _put_be(buffer, n + (1 if prefix >= 0 else 0), 4)
    if prefix >= 0:
        _put_be(buffer, prefix, 1)
    _put(buffer, s, n)
    return 1


cdef int _numeric(_Buffer* buffer, const char* s, Py_ssize_t n) except -1:
    # -?[0-9]+(\.[0-9]+)? as numeric_out writes a finite value, in base-10000 digits
    cdef Py_ssize_t i = 0, start, int_end, frac_start = 0, frac_end = 0, count, pad, g, first, last
    cdef unsigned short groups[NUMERIC_MAX_GROUPS]
    cdef char digits[NUMERIC_MAX_DIGITS + 8]
    cdef bint negative = n > 0 and s[0] == 45
    cdef int weight
    if negative:
        i = 1
    start = i
    i = int_end = _skip_digits(s, i, n)
    if int_end == start:
        return 0
    if i < n:
        if s[i] != 46:
            return 0
        i += 1
        frac_start = i
        i = frac_end = _skip_digits(s, i, n)
        if frac_end == frac_start or i != n:
            return 0
    while start < int_end - 1 and s[start] == 48:  # leading zeros
        start += 1
    if (int_end - start) + (frac_end - frac_start) > NUMERIC_MAX_DIGITS:
        return 0
    # the integer digits padded on the left and the fraction on the right to whole groups
    pad = (4 - (int_end - start) % 4) % 4
    count = 0
    for i in range(pad):
        digits[count] = 48
        count += 1
    memcpy(digits + count, s + start, int_end - start)
    count += int_end - start
    weight = <int>(count // 4) - 1
    if frac_end > frac_start:
        memcpy(digits + count, s + frac_start, frac_end - frac_start)
        count += frac_end - frac_start
    while count % 4:
        digits[count] = 48
        count += 1
    for g in range(count // 4):
        groups[g] = <unsigned short>(
            (digits[4 * g] - 48) * 1000 + (digits[4 * g + 1] - 48) * 100
            + (digits[4 * g + 2] - 48) * 10 + (digits[4 * g + 3] - 48)
        )
    first, last = 0, count // 4
    while first < last and groups[first] == 0:
        first += 1
        weight -= 1
    while last > first and groups[last - 1] == 0:
        last -= 1
    if first == last:  # zero: positive, weight 0, as make_result stores it
        weight = 0
        negative = False
    _put_be(buffer, 8 + 2 * (last - first), 4)
    _put_be(buffer, <unsigned long long>(last - first), 2)
    _put_be(buffer, <unsigned long long><unsigned short><short>weight, 2)
    _put_be(buffer, 0x4000 if negative else 0, 2)
    _put_be(buffer, <unsigned long long>(frac_end - frac_start), 2)  # dscale
    for g in range(first, last):
        _put_be(buffer, groups[g], 2)
    return 1


cdef inline bint _same(const char* a, const char* b, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if a[i] != b[i]:
            return False
    return True


cdef inline Py_ssize_t _some_digits(const char* s, Py_ssize_t i, Py_ssize_t n) noexcept:
    # past one or more digits from i, or -1 if there is none
    cdef Py_ssize_t end = _skip_digits(s, i, n)
    return end if end > i else -1


cdef bint _float_form(const char* s, Py_ssize_t n) noexcept:
    # -?[0-9]+(\.[0-9]+)?(e[+-][0-9]+)? as float8out writes a finite value
    cdef Py_ssize_t i = 0
    if i < n and s[i] == 45:
        i += 1
    i = _some_digits(s, i, n)
    if i < 0:
        return False
    if i < n and s[i] == 46:
        i = _some_digits(s, i + 1, n)
        if i < 0:
            return False
    if i < n and s[i] == 101:
        i += 1
        if i < n and (s[i] == 43 or s[i] == 45):
            i += 1
        i = _some_digits(s, i, n)
        if i < 0:
            return False
    return i == n


cdef bint _nonzero_digit(const char* s, Py_ssize_t n) noexcept:
    # in the mantissa: before any exponent
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] == 101:
            return False
        if 49 <= s[i] <= 57:
            return True
    return False


cdef int _float(_Buffer* buffer, const char* s, Py_ssize_t n, bint single) except -1:
    # strtod / strtof as float8in / float4in use them, on a NUL-terminated copy (a WireRow's
    # value is followed by the next one); overflow to infinity and underflow to zero are
    # errors there (denormals are not), so text. Longer than pgoutput's shortest exact form
    # of any float: text as well.
    cdef char copy[64]
    cdef char* end
    cdef double d
    cdef float f
    cdef unsigned long long bits8
    cdef unsigned int bits4
    if n == 3 and s[0] == 78 and s[1] == 97 and s[2] == 78:  # NaN
        d = NAN
    elif n == 8 and _same(s, b"Infinity", 8):
        d = INFINITY
    elif n == 9 and _same(s, b"-Infinity", 9):
        d = -INFINITY
    elif n >= 64 or not _float_form(s, n):
        return 0
    else:
        memcpy(copy, s, n)
        copy[n] = 0
        if single:
            f = strtof(copy, &end)
            d = f
        else:
            d = strtod(copy, &end)
        if end != copy + n or isinf(d) or (d == 0 and _nonzero_digit(s, n)):
            return 0
    if single:
        f = <float>d
        memcpy(&bits4, &f, 4)
        _put_be(buffer, 4, 4)
        _put_be(buffer, bits4, 4)
    else:
        memcpy(&bits8, &d, 8)
        _put_be(buffer, 8, 4)
        _put_be(buffer, bits8, 8)
    return 1


cdef inline int _two(const char* s) noexcept:
    # two digits, or -1
    if not (_digit(s[0]) and _digit(s[1])):
        return -1
    return (s[0] - 48) * 10 + (s[1] - 48)


cdef Py_ssize_t _date(const char* s, Py_ssize_t n, long long* days) noexcept:
    # YYYY-MM-DD (4 to 6 year digits, year 1 to MAX_YEAR, a real day): the characters
    # read, or 0; days since 2000-01-01 (date2j - POSTGRES_EPOCH_JDATE)
    cdef Py_ssize_t i = 0
    cdef long long year = 0, era, year_of_era, day_of_year
    cdef int month, day, mdays
    while i < n and i < 7 and _digit(s[i]):
        year = year * 10 + (s[i] - 48)
        i += 1
    if i < 4 or i > 6 or year < 1 or year > MAX_YEAR or i + 6 > n or s[i] != 45 or s[i + 3] != 45:
        return 0
    month = _two(s + i + 1)
    day = _two(s + i + 4)
    if month < 1 or month > 12 or day < 1:
        return 0
    if month == 2:
        mdays = 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        mdays = 30
    else:
        mdays = 31
    if day > mdays:
        return 0
    # days from 0000-03-01 in the proleptic Gregorian calendar (as PostgreSQL counts),
    # in 400-year eras; 0000-03-01 is 730425 days before 2000-01-01
    if month <= 2:
        year -= 1
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    days[0] = (
        era * 146097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - DAYS_TO_2000
    )
    return i + 6


cdef int _date_field(_Buffer* buffer, const char* s, Py_ssize_t n) except -1:
    cdef long long days
    if _date(s, n, &days) != n:
        return 0
    _put_be(buffer, 4, 4)
    _put_be(buffer, <unsigned long long>days, 4)
    return 1


cdef int _timestamp(_Buffer* buffer, const char* s, Py_ssize_t n, bint with_zone) except -1:
    # YYYY-MM-DD HH:MM:SS(.f{1,6})? and, with a zone, [+-]HH(:MM(:SS)?)? (hours up to
    # 15, as PostgreSQL allows): microseconds since 2000-01-01 (UTC)
    cdef long long days, micros, fraction = 0, scale = 100000
    cdef Py_ssize_t i = _date(s, n, &days)
    cdef int hour, minute, second, zone = 0, part
    cdef int sign
    if i == 0 or i + 9 > n or s[i] != 32 or s[i + 3] != 58 or s[i + 6] != 58:
        return 0
    hour = _two(s + i + 1)
    minute = _two(s + i + 4)
    second = _two(s + i + 7)
    if hour < 0 or hour > 23 or minute < 0 or minute > 59 or second < 0 or second > 59:
        return 0
    i += 9
    if i < n and s[i] == 46:
        i += 1
        if i == n or not _digit(s[i]):
            return 0
        while i < n and _digit(s[i]):
            if scale == 0:
                return 0  # more than 6 digits
            fraction += (s[i] - 48) * scale
            scale //= 10
            i += 1
    if with_zone:
        if i + 3 > n or (s[i] != 43 and s[i] != 45):
            return 0
        sign = 1 if s[i] == 43 else -1
        part = _two(s + i + 1)
        if part < 0 or part > 15:
            return 0
        zone = part * 3600
        i += 3
        if i < n:
            if i + 3 > n or s[i] != 58:
                return 0
            part = _two(s + i + 1)
            if part < 0 or part > 59:
                return 0
            zone += part * 60
            i += 3
        if i < n:
            if i + 3 > n or s[i] != 58:
                return 0
            part = _two(s + i + 1)
            if part < 0 or part > 59:
                return 0
            zone += part
            i += 3
        zone *= sign
    if i != n:
        return 0
    micros = ((days * 86400 + hour * 3600 + minute * 60 + second - zone) * 1000000) + fraction
    _put_be(buffer, 8, 4)
    _put_be(buffer, <unsigned long long>micros, 8)
    return 1


cdef inline int _hex(char c) noexcept:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef int _uuid(_Buffer* buffer, const char* s, Py_ssize_t n) except -1:
    # 8-4-4-4-12 hex digits, either case
    cdef unsigned char out[16]
    cdef Py_ssize_t i = 0, k = 0
    cdef int high, low
    if n != 36 or s[8] != 45 or s[13] != 45 or s[18] != 45 or s[23] != 45:
        return 0
    while k < 16:
        if i == 8 or i == 13 or i == 18 or i == 23:
            i += 1
        high = _hex(s[i])
        low = _hex(s[i + 1])
        if high < 0 or low < 0:
            return 0
        out[k] = <unsigned char>(high * 16 + low)
        k += 1
        i += 2
    _put_be(buffer, 16, 4)
    _put(buffer, <const char*>out, 16)
    return 1


cdef int _field(_Buffer* buffer, int kind, const char* s, Py_ssize_t n) except -1:
    if kind == K_INT2:
        return _int(buffer, s, n, 2)
    if kind == K_INT4:
        return _int(buffer, s, n, 4)
    if kind == K_INT8:
        return _int(buffer, s, n, 8)
    if kind == K_BOOL:
        return _bool(buffer, s, n)
    if kind == K_TEXT or kind == K_JSON:
        return _bytes(buffer, s, n, -1)
    if kind == K_JSONB:
        return _bytes(buffer, s, n, 1)
    if kind == K_NUMERIC:
        return _numeric(buffer, s, n)
    if kind == K_FLOAT4:
        return _float(buffer, s, n, True)
    if kind == K_FLOAT8:
        return _float(buffer, s, n, False)
    if kind == K_DATE:
        return _date_field(buffer, s, n)
    if kind == K_TIMESTAMP:
        return _timestamp(buffer, s, n, False)
    if kind == K_TIMESTAMPTZ:
        return _timestamp(buffer, s, n, True)
    if kind == K_UUID:
        return _uuid(buffer, s, n)
    return 0


cdef struct _WireColumns:
    # copy_binary's columns in the WireRows of one template: where each column is in the tuple
    PyObject* template  # borrowed: the rows hold it
    Py_ssize_t count  # copy_binary's columns
    Py_ssize_t width  # the template's columns
    Py_ssize_t* index  # per column, its place in the tuple, or -1: not there, NULL
    Py_ssize_t* offset  # per place in the tuple, where its value's bytes begin, or -1: NULL
    Py_ssize_t* length


cdef int _wire_columns(_WireColumns* wire, dict template, tuple columns) except -1:
    """Map the columns to their places in the template's tuples."""
    cdef Py_ssize_t i, j, width = len(template)
    cdef PyObject* column
    names = list(template)
    free(wire.index)
    free(wire.offset)
    free(wire.length)
    wire.index = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * (wire.count + 1))
    wire.offset = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * (width + 1))
    wire.length = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * (width + 1))
    if wire.index == NULL or wire.offset == NULL or wire.length == NULL:
        raise MemoryError()
    for i in range(wire.count):
        column = PyTuple_GET_ITEM(columns, i)
        wire.index[i] = -1
        for j in range(width):
            if _same_name(PyList_GET_ITEM(names, j), column):
                wire.index[i] = j
                break
    wire.width = width
    wire.template = <PyObject*>template
    return 0


cdef bint _wire_fields(_Buffer* buffer, _WireColumns* wire, WireRow row, int* codes) except -1:
    """The columns' fields of a WireRow, read from its tuple. False if a parser does not
    take a value (the caller COPYs text); ValueError if the tuple is not its template's."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(row.data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(row.data), pos = row.start, j, at, length
    if pos < 0 or pos + 2 > size or <short>((p[pos] << 8) | p[pos + 1]) != wire.width:
        raise ValueError("a WireRow whose tuple is not its template's")
    pos += 2
    for j in range(wire.width):
        if pos < size and p[pos] == 110:  # 'n'
            wire.offset[j] = -1
            pos += 1
            continue
        if pos + 5 > size or p[pos] != 116:
            raise ValueError("a WireRow whose tuple is not its template's")
        length = _be32(p + pos + 1)
        if length < 0 or pos + 5 + length > size:
            raise ValueError("a WireRow whose tuple is not its template's")
        wire.offset[j] = pos + 5
        wire.length[j] = length
        pos += 5 + length
    for j in range(wire.count):
        at = wire.index[j]
        if at < 0 or wire.offset[at] < 0:
            _put_be(buffer, 0xFFFFFFFF, 4)
        elif not _field(buffer, codes[j], <const char*>p + wire.offset[at], wire.length[at]):
            return False
    return True


def copy_binary(list rows, tuple columns, tuple kinds, tuple tail):
    """Rows of text values, [({column: str or None} or a WireRow, lsn), ...], as a binary COPY, in a
    bytearray: the columns' values converted by their kinds (BINARY_KINDS' names), the LSN
    as int8, then `tail`'s fields (each already a binary value). A missing column is NULL.
    None if a value is not text or one of the parsers does not accept it: the caller COPYs
    text."""
    cdef _Buffer buffer
    cdef PyObject* value
    cdef _RowWalk walk
    cdef _WireColumns wire
    cdef const char* text
    cdef Py_ssize_t length, i, count = len(columns)
    cdef int* codes
    cdef long long lsn
    if len(kinds) != count:
        raise ValueError("one kind per column")
    wire.template = NULL
    wire.count = count
    wire.width = 0
    wire.index = wire.offset = wire.length = NULL
    codes = <int*>malloc(sizeof(int) * (count + 1))
    if codes == NULL:
        raise MemoryError()
    payload = bytearray()
    buffer.data = NULL
    buffer.size = buffer.capacity = 0
    buffer.owner = <PyObject*>payload
    try:
        for i in range(count):
            codes[i] = BINARY_KINDS[kinds[i]]
        _put(&buffer, _COPY_SIGNATURE, 11)
        _put_be(&buffer, 0, 4)  # flags
        _put_be(&buffer, 0, 4)  # header extension length
        for row, lsn in rows:
            _put_be(&buffer, <unsigned long long>(count + 1 + len(tail)), 2)
            if type(row) is WireRow:
                if <PyObject*>(<WireRow>row).template != wire.template:
                    _wire_columns(&wire, (<WireRow>row).template, columns)
                if not _wire_fields(&buffer, &wire, <WireRow>row, codes):
                    return None
            else:
                _start_walk(&walk, row)
                for i in range(count):
                    value = _walk_to(&walk, row, PyTuple_GET_ITEM(columns, i))
                    if value == NULL or <object>value is None:
                        _put_be(&buffer, 0xFFFFFFFF, 4)
                    elif type(<object>value) is str:
                        text = PyUnicode_AsUTF8AndSize(<object>value, &length)
                        if not _field(&buffer, codes[i], text, length):
                            return None
                    else:
                        return None
            _put_be(&buffer, 8, 4)
            _put_be(&buffer, <unsigned long long>lsn, 8)
            for field in tail:
                _put_be(&buffer, PyBytes_GET_SIZE(<bytes?>field), 4)
                _put(&buffer, PyBytes_AS_STRING(field), PyBytes_GET_SIZE(field))
        _put_be(&buffer, 0xFFFF, 2)  # the trailer
        PyByteArray_Resize(payload, buffer.size)
        return payload
    finally:
        free(codes)
        free(wire.index)
        free(wire.offset)
        free(wire.length)


def set_last_fields(bytearray payload, bytes value not None):
    """Overwrite the last field of every row of a binary COPY made by copy_binary (a tail
    field of the same length as `value`), in place: a payload built ahead of its
    transaction gets that transaction's value. ValueError if the payload is not such a COPY."""
    cdef unsigned char* p = <unsigned char*>payload
    cdef Py_ssize_t size = len(payload), pos = 19, length, last
    cdef Py_ssize_t width = PyBytes_GET_SIZE(value)
    cdef int fields, i
    if size < 21 or memcmp(p, _COPY_SIGNATURE, 11) != 0 or _be32(p + 15) != 0:
        raise ValueError("not a binary COPY as copy_binary makes it")
    while True:
        if pos + 2 > size:
            raise ValueError("a binary COPY without its trailer")
        fields = <short>((p[pos] << 8) | p[pos + 1])
        pos += 2
        if fields == -1:
            if pos != size:
                raise ValueError("bytes after a binary COPY's trailer")
            return
        if fields < 1:
            raise ValueError("a binary COPY row without fields")
        last = -1
        for i in range(fields):
            if pos + 4 > size:
                raise ValueError("a binary COPY row past its end")
            length = _be32(p + pos)
            pos += 4
            last = pos
            if length < -1:
                raise ValueError("a binary COPY field of negative length")
            if length > 0:
                pos += length
            if pos > size:
                raise ValueError("a binary COPY row past its end")
        if pos - last != width:
            raise ValueError("the last field is not as wide as the value")
        memcpy(p + last, PyBytes_AS_STRING(value), width)


# -- for every writer ---------------------------------------------------------------------

_NO_UNCHANGED = frozenset()


def group_by_unchanged(dict upserts):
    """engine.writers.base.group_by_unchanged, compiled: one pointer compare per value."""
    cdef Py_ssize_t position
    cdef PyObject* c_name
    cdef PyObject* c_value
    cdef PyObject* unchanged = <PyObject*>UNCHANGED
    cdef bint found
    groups = {}
    plain = None
    for change in upserts.values():
        row = (<tuple>change)[0]
        position = 0
        found = False
        if type(row) is not WireRow:  # a WireRow holds no UNCHANGED value
            while PyDict_Next(row, &position, &c_name, &c_value):
                if c_value == unchanged:
                    found = True
                    break
        if found:
            key = frozenset([column for column, text in row.items() if text is UNCHANGED])
            groups.setdefault(key, []).append(change)
        elif plain is None:
            plain = groups.setdefault(_NO_UNCHANGED, [change])
        else:
            plain.append(change)
    return groups


def split_fresh(dict upserts, set fresh):
    """([change for key, change in upserts.items() if key in fresh],
    {key: change for key, change in upserts.items() if key not in fresh}), in one pass."""
    cdef Py_ssize_t position = 0
    cdef PyObject* key
    cdef PyObject* change
    rows = []
    rest = {}
    while PyDict_Next(upserts, &position, &key, &change):
        if <object>key in fresh:
            rows.append(<object>change)
        else:
            rest[<object>key] = <object>change
    return rows, rest


def column_lists(list rows, list columns):
    """[[row.get(name) for row, _ in rows] for name in columns], compiled: each row's dict
    read once, in step with the columns (_walk_to), into every column's list."""
    cdef Py_ssize_t n = len(rows), count = len(columns), i, j
    cdef PyObject* value
    cdef _RowWalk walk
    lists = [[None] * n for _ in range(count)]
    for i in range(n):
        row = (<tuple>rows[i])[0]
        _start_walk(&walk, row)
        for j in range(count):
            value = _walk_to(&walk, row, PyList_GET_ITEM(columns, j))
            if value != NULL:
                Py_INCREF(<object>value)
                PyList_SetItem(<object>PyList_GET_ITEM(lists, j), i, <object>value)
    return lists


def text_columns(list rows, list columns):
    """The rows' ((row, lsn) pairs) values of each column as the buffers of an Arrow string
    array, for pyarrow.Array.from_buffers: (validity bitmap, offsets, data, null count), or
    None for a column with a value that is not text (or None), or with 2 GB of text or more.
    Each row's dict is read once, in step with the columns (_walk_to); no Python string is
    converted one by one, as pyarrow.array would."""
    cdef Py_ssize_t n = len(rows), count = len(columns), i, j, length
    cdef PyObject* value
    cdef _RowWalk walk
    cdef const char* text
    cdef _Buffer* data = NULL
    cdef int** offsets = NULL
    cdef unsigned char** validity = NULL
    cdef Py_ssize_t* nulls = NULL
    cdef bint* failed = NULL
    outputs = []
    if count == 0:
        return []
    try:
        data = <_Buffer*>calloc(count, sizeof(_Buffer))
        offsets = <int**>calloc(count, sizeof(int*))
        validity = <unsigned char**>calloc(count, sizeof(unsigned char*))
        nulls = <Py_ssize_t*>calloc(count, sizeof(Py_ssize_t))
        failed = <bint*>calloc(count, sizeof(bint))
        if not (data and offsets and validity and nulls and failed):
            raise MemoryError()
        for j in range(count):
            bits = bytearray(b"\xff" * ((n + 7) // 8))
            starts = bytearray((n + 1) * 4)
            text_bytes = bytearray()
            outputs.append((bits, starts, text_bytes))
            validity[j] = <unsigned char*>PyByteArray_AS_STRING(bits)
            offsets[j] = <int*>PyByteArray_AS_STRING(starts)
            data[j].owner = <PyObject*>text_bytes
        for i in range(n):
            row = (<tuple>rows[i])[0]
            _start_walk(&walk, row)
            for j in range(count):
                value = _walk_to(&walk, row, PyList_GET_ITEM(columns, j))
                if failed[j]:
                    continue
                if value == NULL or <object>value is None:
                    validity[j][i >> 3] &= ~(1 << (i & 7))
                    nulls[j] += 1
                elif type(<object>value) is str:
                    text = PyUnicode_AsUTF8AndSize(<object>value, &length)
                    if data[j].size + length > 2147483647:
                        failed[j] = True
                        continue
                    _put(&data[j], text, length)
                else:
                    failed[j] = True
                    continue
                offsets[j][i + 1] = <int>data[j].size
        result = []
        for j in range(count):
            if failed[j]:
                result.append(None)
                continue
            bits, starts, text_bytes = outputs[j]
            PyByteArray_Resize(text_bytes, data[j].size)
            result.append((bits, starts, text_bytes, nulls[j]))
        return result
    finally:
        free(data)
        free(offsets)
        free(validity)
        free(nulls)
        free(failed)


# -- the replication stream's message loop -----------------------------------------------
# engine.stream._stream_messages compiled (the reference and fallback, line for line): what
# ReplicationStream.read does for every message, so that a 'w' message costs one copy and
# one call of feed, with no Python bytecode between messages. Rare cases (keepalive, no
# message yet, the end of the stream) return to read(), which handles them for both loops.
# The statuses are engine.stream's (not imported: that module imports this one).

_lsn = _struct.Struct("!Q")
NOTHING, ENDED, CAUGHT_UP, ENOUGH, KEEPALIVE = 0, -1, 1, 2, 3


cdef inline unsigned long long _be64(const unsigned char* p) noexcept:
    return (<unsigned long long>_ube32(p) << 32) | _ube32(p + 4)


def stream_messages(pgconn, feed, Py_ssize_t count, Py_ssize_t upto_changes,
                    unsigned long long flush_lsn, bint in_transaction):
    """engine.stream._stream_messages, compiled."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t size
    cdef unsigned char kind, first
    cdef unsigned long long lsn
    cdef bint got = False
    get = pgconn.get_copy_data
    while True:
        nbytes, data = get(1)
        if nbytes <= 0:
            return (NOTHING if nbytes == 0 else ENDED), count, in_transaction, got, None
        got = True
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const unsigned char*>view.buf
            size = view.len
            if size < 1:
                raise IndexError("index out of range")  # as data[0] would
            kind = p[0]
            if kind == 107:  # 'k'
                return KEEPALIVE, count, in_transaction, got, data
            if kind != 119:  # not 'w': skipped, as the Python loop does
                continue
            message = PyBytes_FromStringAndSize(<const char*>p + 25 if size > 25 else NULL,
                                                size - 25 if size > 25 else 0)
        finally:
            PyBuffer_Release(&view)
        feed(message)
        count += 1
        p = <const unsigned char*>PyBytes_AS_STRING(message)
        size = PyBytes_GET_SIZE(message)
        if size < 1:
            raise IndexError("index out of range")  # as message[0] would
        first = p[0]
        if first == 66:  # 'B'
            in_transaction = True
        elif first == 67:  # 'C'
            in_transaction = False
            lsn = _be64(p + 10) if size >= 18 else _lsn.unpack_from(message, 10)[0]
            if lsn >= flush_lsn:
                return CAUGHT_UP, count, in_transaction, got, None
            if count >= upto_changes:
                return ENOUGH, count, in_transaction, got, None
        elif first == 77 and not in_transaction:  # a non-transactional logical message
            lsn = _be64(p + 2) if size >= 10 else _lsn.unpack_from(message, 2)[0]
            if lsn >= flush_lsn:
                return CAUGHT_UP, count, in_transaction, got, None
