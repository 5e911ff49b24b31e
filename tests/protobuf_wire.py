"""The protobuf wire format, enough to write small ``.caffemodel`` files in tests (the real
format the Caffe reader reads: varints, keys, length-delimited fields). Not a test module."""

from __future__ import annotations


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def ld(field: int, payload: bytes | str | list[bytes]) -> bytes | list[bytes]:
    """A length-delimited field; a list payload (large blobs) stays a list of chunks so that
    megabytes of floats are joined once, by the caller."""
    if isinstance(payload, str):
        payload = payload.encode()
    if isinstance(payload, bytes):
        return key(field, 2) + varint(len(payload)) + payload
    return [key(field, 2) + varint(sum(map(len, payload))), *payload]


def vint(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)
