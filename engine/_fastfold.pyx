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
    if kind == 73 and key not in changes.upserts and key not in changes.deletes:
        changes.fresh.add(key)
    changes.deletes.pop(key, None)
    changes.upserts[key] = (dict(zip(state.names, values)), lsn)
    if kind == 73:
        changes.inserted += 1
    else:
        changes.updated += 1
    return True
