"""Parquet shards with an image column.

The image column is either a struct with a ``bytes`` field (and usually ``path``), as Hugging Face
``datasets`` stores its ``Image`` feature, or a binary column. ``--image-column`` names it; without
it, the column is found as the only struct column with a binary ``bytes`` field, else a binary
column named ``image``. Each row with image bytes is one record keyed by its row number; rows with
no image (null) are copied through without a record. Every other column, the struct's other
fields and the schema's metadata are copied through unchanged; rows whose image failed are left
out of the output shard.

Everything else that is copied is searched for image data first, because it would reach the
output unanonymized. The Arrow schema is walked recursively: only types on an allow-list of types
that hold no bytes (integers, floats, booleans, decimals, dates, times, timestamps, durations,
intervals, null) are skipped; every binary and string value, at any depth (lists, large, fixed-size
and view lists, maps, structs, dictionaries, extension types' storage), is searched with
``imageio.find_media``: an image or other media that can show people (video, an archive, a NumPy
array) at any offset, or written as base64 or a data URI. A row holding one gets an error record
naming the column and is left out, unless the column is in ``ShardOptions.allow_image_fields``
(the user's word that it shows no one, e.g. segmentation masks). A column of an Arrow type the
walk does not know fails closed: every row gets an error record. Image data in the schema's or a
column's key-value metadata, which every output row would carry, fails every row the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, TypeVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from blurbeam.imageio import OPAQUE_SNIFF_BYTES, find_media, media_hints, sniff_media
from blurbeam.shards import (
    ImageRecord,
    Outcome,
    Process,
    ShardFormat,
    ShardOptions,
    ShardRef,
    container_record,
    register_format,
    shard_record,
    stray_image_error,
)

# the source's codec (as Parquet metadata names it) -> how pyarrow writes it
_WRITE_CODECS = {
    "uncompressed": "none",
    "snappy": "snappy",
    "gzip": "gzip",
    "brotli": "brotli",
    "zstd": "zstd",
    "lz4": "lz4",
    "lz4_raw": "lz4",
}


T = TypeVar("T")
NO_IMAGE = "no image in any Parquet row"


class ImageColumnError(ValueError):
    """No usable image column in a Parquet shard."""


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _struct_bytes_field(t: pa.DataType) -> int | None:
    if pa.types.is_struct(t):
        idx = t.get_field_index("bytes")
        if idx >= 0 and _is_binary(t.field(idx).type):
            return idx
    return None


def image_column(schema: pa.Schema, requested: str | None) -> str:
    """The name of the image column of ``schema`` (see the module doc)."""
    if requested:
        if requested not in schema.names:
            raise ImageColumnError(
                f"--image-column {requested!r} not in the Parquet columns {schema.names}"
            )
        t = schema.field(requested).type
        if not _is_binary(t) and _struct_bytes_field(t) is None:
            raise ImageColumnError(
                f"column {requested!r} is {t}, not binary or a struct with a binary 'bytes' field"
            )
        return requested
    structs = [f.name for f in schema if _struct_bytes_field(f.type) is not None]
    if len(structs) == 1:
        return structs[0]
    if "image" in schema.names and _is_binary(schema.field("image").type):
        return "image"
    found = f"candidates {structs}" if structs else f"columns {schema.names}"
    raise ImageColumnError(f"cannot tell the image column ({found}): pass --image-column")


def _image_bytes(table: pa.Table, column: str) -> pa.Array:
    col = table.column(column).combine_chunks()
    idx = _struct_bytes_field(col.type)
    if idx is None:
        return col
    return col.flatten()[idx]  # flatten: a null struct has null bytes too


class UncheckedTypeError(ValueError):
    """A column type the image-data search does not know how to walk."""


def _holds_no_bytes(t: pa.DataType) -> bool:
    """The allow-list: Arrow types whose values are numbers, flags or times, never bytes."""
    return (
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_temporal(t)  # dates, times, timestamps, durations, intervals
    )


def _is_bytes_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
    )


def _is_list_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def _media_in_values(arr: pa.Array) -> dict[int, str]:
    """``{index: media}`` for the values of a binary or string array that hold image or other
    media data. The values' bytes are one buffer: its signature hits (``media_hints``) tell
    which values need the full search beyond their first bytes."""
    arr = arr.cast(pa.large_binary())
    values = arr.to_pylist()
    found: dict[int, str] = {}
    for i, value in enumerate(values):
        media = sniff_media(value[:OPAQUE_SNIFF_BYTES]) if value else None
        if media:
            found[i] = media
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    if data is None or not len(offsets):
        return found
    hints = np.asarray(media_hints(data.to_pybytes()), np.int64)
    rows = np.unique(np.searchsorted(offsets, hints, side="right") - 1)
    for i in rows[(rows >= 0) & (rows < len(values))].tolist():
        value = values[i]
        if i not in found and value:
            media = find_media(value)
            if media:
                found[i] = media
    return found


def _media_rows(arr: pa.Array) -> dict[int, str]:
    """``{index: media}`` for the elements of ``arr`` that hold image or other media data
    anywhere inside. Raises UncheckedTypeError for a type outside the walk."""
    t = arr.type
    found: dict[int, str] = {}
    if _holds_no_bytes(t):
        return found
    if isinstance(t, pa.BaseExtensionType):
        return _media_rows(arr.storage)
    if _is_bytes_like(t):
        return _media_in_values(arr)
    if pa.types.is_map(t):
        arr = arr.cast(pa.list_(pa.struct([t.key_field, t.item_field])))
        t = arr.type
    if _is_list_like(t):
        inner = _media_rows(arr.flatten())
        if inner:
            parents = pc.list_parent_indices(arr).to_numpy()
            for i, media in inner.items():
                found.setdefault(int(parents[i]), media)
        return found
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            for row, media in _media_rows(arr.field(i)).items():
                found.setdefault(row, media)
        return found
    if pa.types.is_dictionary(t):
        inner = _media_rows(arr.dictionary)
        if inner:
            indices = arr.indices.fill_null(-1).to_numpy()
            for row, index in enumerate(indices.tolist()):
                if index in inner:
                    found.setdefault(row, inner[index])
        return found
    raise UncheckedTypeError(f"Arrow type {t}")


def _metadata_media(schema: pa.Schema) -> str | None:
    """The audit reason when the schema's or a column's key-value metadata holds image data."""
    places = [("schema metadata", schema.metadata)]
    places += [(f"metadata of column {f.name!r}", f.metadata) for f in schema]
    for where, metadata in places:
        for key, value in (metadata or {}).items():
            media = find_media(key) or find_media(value)
            if media:
                name = key.decode("utf-8", "replace")
                return (
                    f"{where} key {name!r} holds {media} data that is not anonymized and would "
                    "be copied with every row, so this is left out of the output"
                )
    return None


def stray_images(table: pa.Table, column: str, opts: ShardOptions) -> dict[int, str]:
    """Rows holding image data outside the image column's bytes, with the audit reason."""
    out: dict[int, str] = {}
    reason = _metadata_media(table.schema)
    if reason:
        return dict.fromkeys(range(table.num_rows), reason)
    for name in table.schema.names:
        if name in opts.allow_image_fields:
            continue
        col = table.column(name).combine_chunks()
        parts = [col]
        if name == column:
            idx = _struct_bytes_field(col.type)
            if idx is None:
                continue  # a plain binary image column: nothing else in it
            parts = [col.field(i) for i in range(col.type.num_fields) if i != idx]
        for part in parts:
            try:
                found = _media_rows(part)
            except UncheckedTypeError as exc:
                unknown = (
                    f"column {name!r} has an {exc} that blurbeam cannot search for image data, "
                    f"so this is left out of the output; pass --allow-image-field {name} if it "
                    "shows no one"
                )
                for row in range(table.num_rows):
                    out.setdefault(row, unknown)
                continue
            for row, media in found.items():
                out.setdefault(row, stray_image_error("column", name, media))
    return out


def _without_views(t: pa.DataType) -> pa.DataType:
    """``t`` with every view type (binary, string, list) replaced by its large equivalent, which
    pyarrow's filter kernel takes (it has none for view types)."""
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.large_list(t.value_field.with_type(_without_views(t.value_type)))
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_without_views(t.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_without_views(t.value_type)))
    if pa.types.is_fixed_size_list(t):
        field = t.value_field.with_type(_without_views(t.value_type))
        return pa.list_(field, t.list_size)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_without_views(f.type)) for f in t])
    if pa.types.is_map(t):
        key, item = t.key_field, t.item_field
        return pa.map_(
            key.with_type(_without_views(key.type)), item.with_type(_without_views(item.type))
        )
    return t


def _filter_rows(table: pa.Table, keep: list[bool]) -> pa.Table:
    """The rows of ``table`` where ``keep`` is true, every column keeping its type."""
    mask = pa.array(keep, pa.bool_())
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        plain = _without_views(field.type)
        if plain.equals(field.type):
            columns.append(column.filter(mask))
            continue
        try:
            columns.append(column.cast(plain).filter(mask).cast(field.type))
        except pa.ArrowNotImplementedError:  # no cast back (list views): rebuilt from values
            kept = [v for v, k in zip(column.to_pylist(), keep, strict=True) if k]
            columns.append(pa.array(kept, field.type))
    return pa.Table.from_arrays(columns, schema=table.schema)


def _read_table(ref: ShardRef) -> pa.Table:
    fs, path = fsspec.core.url_to_fs(ref.uri)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh)


@register_format
class ParquetFormat(ShardFormat):
    """Streamed row group by row group (memory: one row group); its footer comes last, so the
    shard is hashed in a pass of its own (``sequential = False``)."""

    name = "parquet"
    container = True
    sequential = False

    def matches(self, path: str) -> bool:
        return path.lower().endswith(".parquet")

    def _records(
        self,
        ref: ShardRef,
        images: pa.Array,
        with_data: bool,
        opts: ShardOptions,
        stray: dict[int, str],
        first_row: int = 0,
    ) -> list[ImageRecord]:
        """The records of the rows of ``images`` (the first of them is row ``first_row`` of the
        shard) that hold an image or stray image data."""
        sizes = pc.binary_length(images).to_pylist()
        records = []
        for row, size in enumerate(sizes):
            if size is None and row not in stray:
                continue
            data = images[row].as_py() if with_data and row not in stray else None
            key = str(first_row + row)
            records.append(container_record(ref, key, size or 0, data, opts, stray.get(row)))
        return records

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        table = _read_table(ref)
        column = image_column(table.schema, opts.image_column)
        stray = stray_images(table, column, opts)
        records = self._records(ref, _image_bytes(table, column), True, opts, stray)
        yield from records or [shard_record(ref, NO_IMAGE)]

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        table = _read_table(ref)
        column = image_column(table.schema, opts.image_column)
        stray = stray_images(table, column, opts)
        records = self._records(ref, _image_bytes(table, column), False, opts, stray)
        return [r.key for r in records or [shard_record(ref, NO_IMAGE)]]

    def transform(
        self,
        ref: ShardRef,
        src: BinaryIO,
        sink: BinaryIO,
        opts: ShardOptions,
        process: Process[T],
    ) -> list[Outcome[T]]:
        pf = pq.ParquetFile(src)
        schema = pf.schema_arrow
        column = image_column(schema, opts.image_column)
        meta = pf.metadata
        codec = meta.row_group(0).column(0).compression.lower() if meta.num_row_groups else ""
        rows_per_group = meta.row_group(0).num_rows if meta.num_row_groups else None
        outcomes: list[Outcome[T]] = []
        first_row = 0
        with pq.ParquetWriter(
            sink, schema, compression=_WRITE_CODECS.get(codec, "snappy")
        ) as writer:
            for group in range(pf.num_row_groups):
                table = pf.read_row_group(group).replace_schema_metadata(schema.metadata)
                kept, done = self._transform_rows(ref, table, column, first_row, opts, process)
                outcomes += done
                if kept.num_rows:
                    writer.write_table(kept, row_group_size=rows_per_group or None)
                first_row += table.num_rows
        return outcomes or [Outcome(shard_record(ref, NO_IMAGE))]

    def _transform_rows(
        self,
        ref: ShardRef,
        table: pa.Table,
        column: str,
        first_row: int,
        opts: ShardOptions,
        process: Process[T],
    ) -> tuple[pa.Table, list[Outcome[T]]]:
        """One row group: its rows with each image replaced by its new bytes, without the rows
        whose image failed or that hold stray image data; and the outcome of each record."""
        images = _image_bytes(table, column)
        stray = stray_images(table, column, opts)
        records = {
            int(r.key) - first_row: r
            for r in self._records(ref, images, True, opts, stray, first_row)
        }
        new_bytes: list[bytes | None] = []
        keep: list[bool] = []
        outcomes: list[Outcome[T]] = []
        for row in range(table.num_rows):
            rec = records.get(row)
            if rec is None:  # no image in this row: copied as it is
                new_bytes.append(None)
                keep.append(True)
                continue
            outcome: Outcome[T] = Outcome(rec)
            body = None
            if rec.error is None:
                outcome.result, body = process(rec)
            rec.data = None
            outcome.written = body is not None
            new_bytes.append(body)
            keep.append(body is not None)
            outcomes.append(outcome)
        col = table.column(column).combine_chunks()
        field_idx = _struct_bytes_field(col.type)
        if field_idx is None:
            new_col = pa.array(new_bytes, type=col.type)
        else:
            children = [
                pa.array(new_bytes, type=col.type.field(i).type) if i == field_idx else col.field(i)
                for i in range(col.type.num_fields)
            ]
            new_col = pa.StructArray.from_arrays(
                children, fields=list(col.type), mask=pc.invert(col.is_valid())
            )
        idx = table.schema.get_field_index(column)
        table = table.set_column(idx, table.schema.field(idx), new_col)
        return _filter_rows(table, keep), outcomes
