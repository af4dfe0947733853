"""TFRecord shards of ``tf.train.Example`` with the image in the ``image/encoded`` feature.

Read and written without TensorFlow: the TFRecord framing (length, masked CRC32C of the length,
data, masked CRC32C of the data) and the few protobuf messages involved (Example -> Features ->
map<string, Feature> -> BytesList) are handled at the wire level. A shard is streamed record by
record; when it is written back, only the ``image/encoded`` entry of an Example is re-encoded;
every other feature, unknown field and record is copied byte for byte. Each Example with an image
is one record keyed by its index in the file; Examples without ``image/encoded`` are copied through
without a record. A record that is not a parseable Example, or whose ``image/encoded`` holds
several images, gets an error record and is left out of the output shard. So does an Example with
image data in another feature (``image/thumbnail``, a crop...) or other media that can show people
(video, an archive), which would otherwise reach the output unanonymized, unless that feature is in
``ShardOptions.allow_image_fields`` (the user's word that it shows no one, e.g.
``image/segmentation/class/encoded`` masks). Each bytes value, and then the whole serialized
feature (float and int64 lists, unknown fields), is searched with ``imageio.find_media``: media at
any offset, or written as base64 or a data URI. Unknown fields of the Features message, which a
written-back shard would copy too, are searched the same way and cannot be allowed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO, TypeVar

import fsspec
import google_crc32c

from blurbeam.errors import one_line
from blurbeam.imageio import find_media
from blurbeam.shards import (
    ImageRecord,
    Outcome,
    Process,
    ShardFormat,
    ShardOptions,
    ShardReadError,
    ShardRef,
    container_record,
    register_format,
    shard_record,
    stray_image_error,
)

IMAGE_FEATURE = b"image/encoded"
NO_IMAGE = "no Example with image/encoded"
T = TypeVar("T")
_LEN = 2  # protobuf wire type of length-delimited fields


class TFRecordError(ValueError):
    """The file is not a valid TFRecord file."""


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_records(fh: BinaryIO) -> Iterator[bytes]:
    """The records of a TFRecord stream, checking both CRCs."""
    offset = 0
    while True:
        header = fh.read(12)
        if not header:
            return
        if len(header) < 12:
            raise TFRecordError(f"truncated record header at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if masked_crc(header[:8]) != length_crc:
            raise TFRecordError(f"corrupt record length at byte {offset}")
        data = fh.read(length)
        footer = fh.read(4)
        if len(data) < length or len(footer) < 4:
            raise TFRecordError(f"truncated record at byte {offset}")
        if masked_crc(data) != struct.unpack("<I", footer)[0]:
            raise TFRecordError(f"corrupt record data at byte {offset}")
        offset += 16 + length
        yield data


def frame(data: bytes) -> bytes:
    """One TFRecord record."""
    length = struct.pack("<Q", len(data))
    return (
        length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))
    )


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, start of the raw field, start of the value, end)."""
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, end = _varint(buf, pos)
        elif wire == 1:
            end = pos + 8
        elif wire == 5:
            end = pos + 4
        elif wire == _LEN:
            length, pos = _varint(buf, pos)
            end = pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if end > len(buf) or number == 0:
            raise ValueError("truncated or invalid protobuf field")
        yield number, wire, start, pos, end
        pos = end


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint((number << 3) | _LEN) + _encode_varint(len(payload)) + payload


def _entry_key(entry: bytes) -> bytes | None:
    for number, wire, _, v0, v1 in _fields(entry):
        if number == 1 and wire == _LEN:
            return entry[v0:v1]
    return None


def _bytes_values(entry: bytes) -> list[bytes]:
    """The BytesList values of a map entry's Feature (empty for float/int64 features)."""
    values: list[bytes] = []
    for number, wire, _, v0, v1 in _fields(entry):
        if number == 2 and wire == _LEN:  # Feature
            feature = entry[v0:v1]
            for fnum, fwire, _, f0, f1 in _fields(feature):
                if fnum == 1 and fwire == _LEN:  # BytesList
                    blist = feature[f0:f1]
                    values += [blist[b0:b1] for n, w, _, b0, b1 in _fields(blist) if n == 1]
    return values


def example_image(example: bytes) -> bytes | None:
    """The ``image/encoded`` bytes of a serialized Example, None without one; ValueError when
    the record is not an Example or holds more than one image."""
    found: list[list[bytes]] = []
    for number, wire, _, v0, v1 in _fields(example):
        if number == 1 and wire == _LEN:  # Features
            features = example[v0:v1]
            for fnum, fwire, _, e0, e1 in _fields(features):
                if fnum == 1 and fwire == _LEN and _entry_key(features[e0:e1]) == IMAGE_FEATURE:
                    found.append(_bytes_values(features[e0:e1]))
        elif number != 1:
            raise ValueError(f"unexpected field {number} in a tf.train.Example")
    if not found:
        return None
    if len(found) > 1 or len(found[0]) != 1:
        n = sum(len(v) for v in found)
        raise ValueError(f"image/encoded holds {n} images; one per Example is supported")
    return found[0][0]


def stray_image(example: bytes, allowed: tuple[str, ...] = ()) -> str | None:
    """The audit reason when a feature other than ``image/encoded`` (and not in ``allowed``), or
    an unknown field of the Features message, holds image or other media data, else None.
    ``example`` must parse (see ``example_image``)."""
    for number, wire, _, v0, v1 in _fields(example):
        if number != 1 or wire != _LEN:
            continue
        features = example[v0:v1]
        for fnum, fwire, fstart, e0, e1 in _fields(features):
            if fnum != 1 or fwire != _LEN:
                media = find_media(features[fstart:e1])
                if media:
                    return (
                        f"field {fnum} of the Example's Features (not a feature) holds {media} "
                        "data that is not anonymized, so this is left out of the output"
                    )
                continue
            entry = features[e0:e1]
            key = _entry_key(entry)
            if key == IMAGE_FEATURE:
                continue  # rewritten from its image alone: nothing else of the entry is kept
            name = "" if key is None else key.decode("utf-8", "replace")
            if name in allowed:
                continue
            for value in [*_bytes_values(entry), entry]:
                media = find_media(value)
                if media:
                    return stray_image_error("feature", name, media)
    return None


def replace_image(example: bytes, image: bytes) -> bytes:
    """The Example with its ``image/encoded`` value replaced, all other bytes kept as they are."""
    out = bytearray()
    for number, wire, start, v0, v1 in _fields(example):
        if not (number == 1 and wire == _LEN):
            out += example[start:v1]
            continue
        features = example[v0:v1]
        new_features = bytearray()
        for fnum, fwire, fstart, e0, e1 in _fields(features):
            entry = features[e0:e1]
            if fnum == 1 and fwire == _LEN and _entry_key(entry) == IMAGE_FEATURE:
                feature = _len_field(1, _len_field(1, image))  # Feature{bytes_list{value}}
                new_features += _len_field(1, _len_field(1, IMAGE_FEATURE) + _len_field(2, feature))
            else:
                new_features += features[fstart:e1]
        out += _len_field(1, bytes(new_features))
    return bytes(out)


@register_format
class TFRecordFormat(ShardFormat):
    name = "tfrecord"
    container = True

    def matches(self, path: str) -> bool:
        return path.lower().endswith((".tfrecord", ".tfrecords", ".tfrec"))

    def _iter(
        self, ref: ShardRef, fh: BinaryIO, opts: ShardOptions, with_data: bool
    ) -> Iterator[tuple[bytes, ImageRecord | None]]:
        """Each TFRecord record of ``fh`` with its image record (None for an Example with no
        image and nothing stray)."""
        for index, data in enumerate(iter_records(fh)):
            try:
                image = example_image(data)
            except ValueError as exc:
                error = f"record {index} rejected: {' '.join(str(exc).split())}"
                yield data, container_record(ref, str(index), 0, None, opts, error)
                continue
            stray = stray_image(data, opts.allow_image_fields)
            if image is None and stray is None:
                yield data, None
                continue
            size = len(image) if image is not None else 0
            kept = image if with_data and stray is None else None
            yield data, container_record(ref, str(index), size, kept, opts, stray)

    def _records(self, ref: ShardRef, opts: ShardOptions, with_data: bool) -> list[ImageRecord]:
        fs, path = fsspec.core.url_to_fs(ref.uri)
        with fs.open(path, "rb") as fh:
            records = [rec for _, rec in self._iter(ref, fh, opts, with_data) if rec]
        return records or [shard_record(ref, NO_IMAGE)]

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        yield from self._records(ref, opts, True)

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        return [r.key for r in self._records(ref, opts, False)]

    def transform(
        self,
        ref: ShardRef,
        src: BinaryIO,
        sink: BinaryIO,
        opts: ShardOptions,
        process: Process[T],
    ) -> list[Outcome[T]]:
        outcomes: list[Outcome[T]] = []
        try:
            for data, rec in self._iter(ref, src, opts, True):
                if rec is None:  # no image and nothing stray: copied as it is
                    sink.write(frame(data))
                    continue
                outcome: Outcome[T] = Outcome(rec)
                if rec.error is None:
                    outcome.result, body = process(rec)
                    if body is not None:
                        sink.write(frame(replace_image(data, body)))
                        outcome.written = True
                rec.data = None
                outcomes.append(outcome)
        except TFRecordError as exc:
            raise ShardReadError(one_line(exc)) from None
        return outcomes or [Outcome(shard_record(ref, NO_IMAGE))]


def encode_example(features: dict[str, bytes | list[bytes] | list[int] | list[float]]) -> bytes:
    """A serialized ``tf.train.Example`` (bytes, int64 or float features), without TensorFlow."""
    entries = b""
    for name, value in features.items():
        values = [value] if isinstance(value, bytes) else list(value)
        if all(isinstance(v, bytes) for v in values):
            feature = _len_field(1, b"".join(_len_field(1, v) for v in values))
        elif all(isinstance(v, int) for v in values):
            packed = b"".join(_encode_varint(v & 0xFFFFFFFFFFFFFFFF) for v in values)
            feature = _len_field(3, _len_field(1, packed))
        else:
            packed = b"".join(struct.pack("<f", float(v)) for v in values)
            feature = _len_field(2, _len_field(1, packed))
        entries += _len_field(1, _len_field(1, name.encode()) + _len_field(2, feature))
    return _len_field(1, entries)


def write_records(records: list[bytes]) -> bytes:
    """A TFRecord file of ``records``."""
    return b"".join(frame(r) for r in records)
