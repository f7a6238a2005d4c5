# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The client's hot loops compiled: pgoutput's TupleData read in C, Insert/Update/Delete
folded without message objects (mirroring engine.pgoutput.text_row and
engine.fold.BatchBuilder._fast_change line for line), the stream's per-message loop
(engine.stream._stream_messages), and the writers' helpers (COPY text, grouping by
unchanged columns, column lists). The Python versions stay the reference and the fallback
where this module is not built; pipelines/tests/test_fold_paths.py, test_pgoutput.py,
test_stream_loops.py and destinations/tests/test_writer_compiled_paths.py hold both to the
same results. Built by scripts/setup.sh."""

import struct as _struct

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_Next
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdio cimport snprintf
from libc.stdlib cimport free, realloc

from engine.batch import UNCHANGED
from engine.pgoutput import _bad_kind

# engine.fold.FASTFOLD_INTERFACE: raise both when a function is added or changed, so that a
# module built from an older source is not used.
INTERFACE = 2


cdef inline Py_ssize_t _be32(const unsigned char* p) noexcept:
    # signed, as pgoutput's Int32 length (-1 never appears for 't' values)
    return <Py_ssize_t><int>((<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) | (<unsigned int>p[2] << 8) | p[3])


cdef inline unsigned int _ube32(const unsigned char* p) noexcept:
    return (<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) | (<unsigned int>p[2] << 8) | p[3]


cdef tuple _text_row(bytes data, Py_ssize_t pos):
    # None when the tuple runs past the message's end: the general path then reports it
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t count, i, length
    cdef unsigned char kind
    cdef bint unchanged = False
    if pos < 0 or pos + 2 > size:
        return None
    count = <short>((p[pos] << 8) | p[pos + 1])
    pos += 2
    values = []
    for i in range(count):
        if pos >= size:
            return None
        kind = p[pos]
        if kind == 116:  # 't'
            if pos + 5 > size:
                return None
            length = _be32(p + pos + 1)
            pos += 5
            if length < 0 or pos + length > size:
                return None
            values.append(PyUnicode_DecodeUTF8(<const char*>p + pos, length, NULL))
            pos += length
        elif kind == 110:  # 'n'
            pos += 1
            values.append(None)
        elif kind == 117:  # 'u'
            pos += 1
            values.append(UNCHANGED)
            unchanged = True
        else:
            _bad_kind(kind)
    return values, pos, unchanged


def text_row(data, Py_ssize_t pos):
    """engine.pgoutput.text_row, compiled."""
    if type(data) is not bytes:
        data = bytes(data)
    return _text_row(data, pos)


def feed(builder, data):
    """engine.fold.BatchBuilder.feed, compiled."""
    builder.messages += 1
    builder.batch.bytes_read += len(data)
    if type(data) is not bytes:
        data = bytes(data)
    if PyBytes_GET_SIZE(data) and data[0] in (73, 85, 68) and _fast_change(builder, data):
        return
    builder._feed_message(data)


def fast_change(builder, data) -> bool:
    """engine.fold.BatchBuilder._fast_change, compiled."""
    if type(data) is not bytes:
        data = bytes(data)
    return _fast_change(builder, data)


cdef bint _fast_change(builder, bytes data) except -1:
    cdef const unsigned char* p
    cdef Py_ssize_t size
    cdef unsigned char kind
    if builder._skip or not builder._in_transaction:
        return False
    p = <const unsigned char*>PyBytes_AS_STRING(data)
    size = PyBytes_GET_SIZE(data)
    if size < 6:
        return False  # the general path reports what is wrong
    state = builder._relations.get(_ube32(p + 1))
    if state is None or not state.fast:
        return False
    lsn = builder._lsn
    if state.predates_copy and lsn < state.spec.copied_below_lsn:
        return False
    kind = p[0]
    if kind == 68:  # 'D'
        if p[5] != 75:  # 'K': only the key; 'O' goes the general way
            return False
        row = _text_row(data, 6)
        if row is None:
            return False
        values, _, unchanged = row
        key = state.key_of_values(values)
        if unchanged or None in key:
            return False
        changes = builder._changes(state)
        changes.upserts.pop(key, None)
        changes.deletes[key] = lsn
        changes.deleted += 1
        return True
    if p[5] != 78:  # 'N' new tuple; an Update's old key or row: the general path
        return False
    row = _text_row(data, 6)
    if row is None:
        return False
    values, _, unchanged = row
    key = state.key_of_values(values)
    if unchanged or None in key:
        return False
    changes = builder._changes(state)
    if kind == 73 and key not in changes.upserts and key not in changes.deletes:
        changes.fresh.add(key)
    changes.deletes.pop(key, None)
    changes.upserts[key] = (dict(zip(state.names, values)), lsn)
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


cdef int _reserve(_Buffer* buffer, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity
    cdef char* data
    if buffer.size + extra <= buffer.capacity:
        return 0
    capacity = max(buffer.size + extra, buffer.capacity * 2, 65536)
    data = <char*>realloc(buffer.data, capacity)
    if data == NULL:
        raise MemoryError()
    buffer.data = data
    buffer.capacity = capacity
    return 0


cdef int _put(_Buffer* buffer, const char* text, Py_ssize_t length) except -1:
    cdef Py_ssize_t i
    _reserve(buffer, length)
    for i in range(length):
        buffer.data[buffer.size + i] = text[i]
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
    buffer.data = NULL
    buffer.size = buffer.capacity = 0
    tail_text = tail.encode()
    tail_length = len(tail_text)
    try:
        for row, lsn in rows:
            for name in columns:
                value = PyDict_GetItem(row, name)
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


def column_lists(list rows, list columns):
    """[[row.get(name) for row, _ in rows] for name in columns], compiled."""
    cdef PyObject* value
    lists = []
    for name in columns:
        values = []
        for change in rows:
            value = PyDict_GetItem((<tuple>change)[0], name)
            values.append(None if value == NULL else <object>value)
        lists.append(values)
    return lists
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
