"""Parquet shards with an image column.

The image column is either a struct with a ``bytes`` field (and usually ``path``), as Hugging Face
``datasets`` stores its ``Image`` feature, or a binary column. ``--image-column`` names it; without
it, the column is found as the only struct column with a binary ``bytes`` field, else a binary
column named ``image``. Each row with image bytes is one record keyed by its row number; rows with
no image (null) are copied through without a record. Every other column, the struct's other
fields and the schema's metadata are copied through unchanged; rows whose image failed are left
out of the output shard.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from blurbeam.shards import (
    ImageRecord,
    ShardFormat,
    ShardOptions,
    ShardRef,
    check_source,
    member_uri,
    register_format,
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
        self, ref: ShardRef, images: pa.Array, with_data: bool, opts: ShardOptions
    ) -> list[ImageRecord]:
        sizes = pc.binary_length(images).to_pylist()
        records = []
        for row, size in enumerate(sizes):
            if size is None:
                continue
            key = str(row)
            rec = ImageRecord(member_uri(ref.uri, key), ref.uri, key, ref.rel, None)
            if size > opts.max_bytes:
                rec.error = f"image too large: {size} bytes exceeds --max-bytes {opts.max_bytes}"
            elif with_data:
                rec.data = images[row].as_py()
            records.append(rec)
        if not records:
            records.append(
                ImageRecord(ref.uri, ref.uri, "", ref.rel, None, "no image in any Parquet row")
            )
        return records

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        table = _read_table(ref)
        images = _image_bytes(table, image_column(table.schema, opts.image_column))
        yield from self._records(ref, images, True, opts)

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        fs, path = fsspec.core.url_to_fs(ref.uri)
        with fs.open(path, "rb") as fh:
            schema = pq.read_schema(fh)
        column = image_column(schema, opts.image_column)
        with fs.open(path, "rb") as fh:
            table = pq.read_table(fh, columns=[column])
        return [r.key for r in self._records(ref, _image_bytes(table, column), False, opts)]

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
        new_bytes: list[bytes | None] = []
        keep: list[bool] = []
        for row in range(len(images)):
            value = images[row].as_py()
            key = str(row)
            if value is None:
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
