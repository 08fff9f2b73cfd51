# -*- test-case-name: tests.test_records -*-
"""
What every record shares: L{CorruptRecord} and reading and writing the JSON
object a store value holds.

Records import only C{attrs}, C{json} and L{p2twisted.errors}: the CLI loads
them for every verb that reads the store.
"""

import json

from p2twisted.errors import StoreError


class CorruptRecord(StoreError):
    """
    A store value is not the record its key should hold; the message names
    the key and what is wrong.
    """

    summary = "corrupt record"

    def __init__(self, key, reason, backend=None):
        self.reason = reason
        StoreError.__init__(self, key, backend,
                            "unreadable record: %s; overwrite or delete it" % (reason,))


def readable(recordType, entry):
    """
    @return: C{recordType.fromEntry(entry.key, entry)}, or C{None} when
        C{entry} is C{None} or does not hold that record (for readers to whom
        an unreadable record is as good as none).
    """
    if entry is None:
        return None
    try:
        return recordType.fromEntry(entry.key, entry)
    except CorruptRecord:
        return None


def _notANumber(text):
    raise ValueError("%s is not a number JSON allows" % (text,))


def loadObject(key, value):
    """
    @return: the JSON object (a C{dict}) the bytes C{value} hold.
    @raise CorruptRecord: naming C{key}, when they hold anything else (NaN and
        Infinity refused).
    """
    try:
        record = json.loads(value.decode("utf-8") if isinstance(value, bytes) else value,
                            parse_constant=_notANumber)
    except (ValueError, RecursionError) as e:  # (nested too deep to parse)
        raise CorruptRecord(key, "not JSON (%s)" % (e,))
    if not isinstance(record, dict):
        raise CorruptRecord(key, "a JSON %s, not an object" % (type(record).__name__,))
    return record


def dumpObject(record):
    """
    @return: the stored form of a JSON object: sorted keys, UTF-8.
    """
    return json.dumps(record, sort_keys=True).encode("utf-8")


_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false",
          dict: "an object", list: "a list"}


def field(key, record, name, *types, **kw):
    """
    @return: C{record[name]}, or C{default} (C{None}) when it is absent or
        null.
    @param types: the types the value may have (an integer is a number;
        C{True} is no integer).
    @raise CorruptRecord: when it has another type, or is missing and
        C{required}.
    """
    value = record.get(name)
    if value is None:
        if kw.get("required"):
            raise CorruptRecord(key, "%r is missing" % (name,))
        return kw.get("default")
    if isinstance(value, bool) and bool not in types:
        ok = False
    elif float in types and isinstance(value, int):
        ok = True
    else:
        ok = isinstance(value, types)
    if not ok:
        raise CorruptRecord(key, "%r is %r, not %s" % (
            name, value, " or ".join(_NAMES.get(t, t.__name__) for t in types)))
    return value


def segments(key, count, tree):
    """
    @return: the C{count} segments of C{key} after its tree's name.
    @raise CorruptRecord: when C{key} is not such a key of C{tree}.
    """
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != count + len(tree.split("/")) or "/".join(parts[:-count]) != tree:
        raise CorruptRecord(key, "not a key %s/%s" % (tree, "/".join(["..."] * count)))
    return parts[-count:]
