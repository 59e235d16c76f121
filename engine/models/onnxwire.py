"""ONNX files read and edited at the protobuf wire level, without the ``onnx`` package.

Importing ``onnx`` costs ~0.9 s of CPU (its ``ml_dtypes`` extension alone 0.7 s),
paid by every inference process at start-up; what facecut needs from a model
file is a few fields of its graph. The field numbers used here are those of
``onnx/onnx-ml.proto``:

* ModelProto: graph = 7
* GraphProto: node = 1, initializer = 5, input = 11, output = 12
* NodeProto: input = 1, output = 2, name = 3, op_type = 4, domain = 7
* TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9
* ValueInfoProto: name = 1

Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit (ONNX
uses no groups).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT = 1, 5, 11, 12
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP_TYPE, NODE_DOMAIN = 1, 2, 3, 4, 7
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_RAW_DATA = 1, 2, 8, 9
VALUE_INFO_NAME = 1


def read_varint(f) -> int:
    """A varint from a file-like object at its position."""
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            raise EOFError("truncated protobuf")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7


class Field(NamedTuple):
    number: int
    wire: int
    start: int  # offset of the field's key: the field is [start, end)
    value: int  # offset of its value (after the length, for wire type 2)
    end: int

    def payload(self, f) -> bytes:
        f.seek(self.value)
        return f.read(self.end - self.value)


def fields(f, end: int) -> Iterator[Field]:
    """Every field from ``f``'s position up to ``end``. Seeks over contents: a
    model's weights are never read."""
    while f.tell() < end:
        start = f.tell()
        key = read_varint(f)
        number, wire = key >> 3, key & 7
        if wire == 2:
            n = read_varint(f)
            value = f.tell()
            f.seek(value + n)
        elif wire == 0:
            value = f.tell()
            read_varint(f)
        elif wire in (1, 5):
            value = f.tell()
            f.seek(8 if wire == 1 else 4, 1)
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield Field(number, wire, start, value, f.tell())


def texts(f, start: int, end: int, numbers) -> dict[int, list[str]]:
    """The values of the string fields ``numbers`` of the message in [start, end),
    in one walk over it."""
    f.seek(start)
    out: dict[int, list[str]] = {n: [] for n in numbers}
    for x in list(fields(f, end)):
        if x.wire == 2 and x.number in out:
            out[x.number].append(x.payload(f).decode("utf-8", "replace"))
    return out


def strings(f, start: int, end: int, number: int) -> list[str]:
    """The values of string field ``number`` of the message in [start, end)."""
    return texts(f, start, end, (number,))[number]


def ints(f, start: int, end: int, number: int) -> list[int]:
    """The values of int32/int64 field ``number`` (packed or not) of the message in
    [start, end); negative values are ten-byte two's complement varints."""
    f.seek(start)
    out = []
    for x in list(fields(f, end)):
        if x.number != number:
            continue
        f.seek(x.value)
        if x.wire == 0:
            out.append(read_varint(f))
        elif x.wire == 2:  # packed
            while f.tell() < x.end:
                out.append(read_varint(f))
    return [v - (1 << 64) if v >= 1 << 63 else v for v in out]


# ------------------------------------------------------------------ writing


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def message(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, a string, bytes)."""
    return key(number, 2) + varint(len(payload)) + payload


def string(number: int, text: str) -> bytes:
    return message(number, text.encode("utf-8"))


def integer(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def node(op_type: str, inputs: list[str], outputs: list[str], name: str) -> bytes:
    """A NodeProto of the default domain, without attributes."""
    return (b"".join(string(NODE_INPUT, i) for i in inputs) + b"".join(string(NODE_OUTPUT, o) for o in outputs)
            + string(NODE_NAME, name) + string(NODE_OP_TYPE, op_type))


def tensor(name: str, dims: list[int], data_type: int, raw: bytes) -> bytes:
    """A TensorProto with its values as little-endian ``raw_data``."""
    return (b"".join(integer(TENSOR_DIMS, d) for d in dims) + integer(TENSOR_DATA_TYPE, data_type)
            + string(TENSOR_NAME, name) + message(TENSOR_RAW_DATA, raw))
