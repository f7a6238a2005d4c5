# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The fold's fast path compiled: pgoutput's TupleData read in C, and Insert/Update/Delete
folded without message objects. It mirrors engine.pgoutput.text_row and
engine.fold.BatchBuilder._fast_change line for line; those stay the reference (and the
fallback where this module is not built), and engine/tests/test_fastfold.py holds both to
the same captured pgoutput bytes and fold cases. Built by scripts/setup.sh."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8

from engine.batch import UNCHANGED
from engine.pgoutput import _bad_kind


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
    changes.deletes.pop(key, None)
    changes.upserts[key] = (dict(zip(state.names, values)), lsn)
    if kind == 73:
        changes.inserted += 1
    else:
        changes.updated += 1
    return True


# -- the replication stream's message loop -----------------------------------------------
# engine.stream._stream_messages compiled (the reference and fallback, line for line): what
# ReplicationStream.read does for every message, so that a 'w' message costs one copy and
# one call of feed, with no Python bytecode between messages. Rare cases (keepalive, no
# message yet, the end of the stream) return to read(), which handles them for both loops.
# The statuses are engine.stream's (not imported: that module imports this one).

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
import struct as _struct

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
