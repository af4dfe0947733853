"""Parquet shards with an image column.

The image column is either a struct with a ``bytes`` field (and usually ``path``), as Hugging Face
``datasets`` stores its ``Image`` feature, or a binary column. ``--image-column`` names it; without
it, the column is found as the only struct column with a binary ``bytes`` field, else a binary
column named ``image``. Each row with image bytes is one record keyed by its row number; rows with
no image (null) are copied through without a record. Every other column, the struct's other
fields and the schema's metadata are copied through unchanged; rows whose image failed are left
out of the output shard.

Image data anywhere else in a row (a second binary column such as a thumbnail, a list of crops,
a struct field), or other media that can show people (video, an archive, a NumPy array:
``imageio.sniff_opaque``), would reach the output unanonymized, so such a row gets an error
record naming the column and is left out, unless the column is in
``ShardOptions.allow_image_fields`` (the user's word that it shows no one, e.g. segmentation
masks).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from blurbeam.imageio import sniff_media
from blurbeam.shards import (
    ImageRecord,
    ShardFormat,
    ShardOptions,
    ShardRef,
    check_source,
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


def _holds_binary(t: pa.DataType) -> bool:
    if _is_binary(t) or pa.types.is_fixed_size_binary(t):
        return True
    if pa.types.is_struct(t):
        return any(_holds_binary(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _holds_binary(t.value_type)
    if pa.types.is_map(t):
        return _holds_binary(t.key_type) or _holds_binary(t.item_type)
    return False


def _image_in(value: object) -> str | None:
    """The format of the first image (or other media) bytes inside a cell (nested lists,
    structs, maps)."""
    if isinstance(value, bytes | bytearray):
        return sniff_media(value)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for v in value:
            found = _image_in(v)
            if found:
                return found
    return None


def stray_images(table: pa.Table, column: str, opts: ShardOptions) -> dict[int, str]:
    """Rows holding image data outside the image column's bytes, with the audit reason."""
    out: dict[int, str] = {}
    for name in table.schema.names:
        t = table.schema.field(name).type
        if name in opts.allow_image_fields or not _holds_binary(t):
            continue
        if name == column:
            idx = _struct_bytes_field(t)
            if idx is None:
                continue  # a plain binary image column: nothing else in it
            others = [t.field(i).name for i in range(t.num_fields) if i != idx]
            if not any(_holds_binary(t.field(f).type) for f in others):
                continue
        for row, value in enumerate(table.column(name).to_pylist()):
            if name == column and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != "bytes"}
            fmt = _image_in(value) if row not in out else None
            if fmt:
                out[row] = stray_image_error("column", name, fmt)
    return out


def _read_table(ref: ShardRef) -> pa.Table:
    fs, path = fsspec.core.url_to_fs(ref.uri)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh)


@register_format
class ParquetFormat(ShardFormat):
    name = "parquet"
    container = True

    def matches(self, path: str) -> bool:
        return path.lower().endswith(".parquet")

    def _records(
        self,
        ref: ShardRef,
        images: pa.Array,
        with_data: bool,
        opts: ShardOptions,
        stray: dict[int, str],
    ) -> list[ImageRecord]:
        sizes = pc.binary_length(images).to_pylist()
        records = []
        for row, size in enumerate(sizes):
            if size is None and row not in stray:
                continue
            data = images[row].as_py() if with_data and row not in stray else None
            records.append(container_record(ref, str(row), size or 0, data, opts, stray.get(row)))
        if not records:
            records.append(shard_record(ref, "no image in any Parquet row"))
        return records

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        table = _read_table(ref)
        column = image_column(table.schema, opts.image_column)
        stray = stray_images(table, column, opts)
        yield from self._records(ref, _image_bytes(table, column), True, opts, stray)

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        table = _read_table(ref)
        column = image_column(table.schema, opts.image_column)
        stray = stray_images(table, column, opts)
        return [r.key for r in self._records(ref, _image_bytes(table, column), False, opts, stray)]

    def rewrite(
        self,
        source: bytes,
        replaced: dict[str, tuple[str, bytes]],
        opts: ShardOptions,
        written: set[str] | None = None,
    ) -> bytes:
        written = set() if written is None else written
        pf = pq.ParquetFile(io.BytesIO(source))
        table = pf.read()
        column = image_column(table.schema, opts.image_column)
        images = _image_bytes(table, column)
        stray = stray_images(table, column, opts)
        new_bytes: list[bytes | None] = []
        keep: list[bool] = []
        for row in range(len(images)):
            value = images[row].as_py()
            key = str(row)
            if row in stray:  # never copied; its error record says why
                new_bytes.append(None)
                keep.append(False)
            elif value is None:
                new_bytes.append(None)
                keep.append(True)
            elif key in replaced:
                new_bytes.append(check_source(key, value, replaced))
                keep.append(True)
                written.add(key)
            else:
                new_bytes.append(None)
                keep.append(False)
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
        table = table.filter(pa.array(keep))
        meta = pf.metadata
        codec = meta.row_group(0).column(0).compression.lower() if meta.num_row_groups else ""
        rows_per_group = meta.row_group(0).num_rows if meta.num_row_groups else None
        out = io.BytesIO()
        pq.write_table(
            table,
            out,
            compression=_WRITE_CODECS.get(codec, "snappy"),
            row_group_size=rows_per_group or None,
        )
        return out.getvalue()
