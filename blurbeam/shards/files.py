"""The plain-file shard kind: each image file is one shard holding one image."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import fsspec

from blurbeam.imageio import IMAGE_EXTENSIONS
from blurbeam.shards import ImageRecord, ShardFormat, ShardOptions, ShardRef, register_format


@register_format
class FileFormat(ShardFormat):
    name = "file"

    def matches(self, path: str) -> bool:
        return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        return [""]

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        max_bytes = opts.max_bytes
        record = ImageRecord(ref.uri, ref.uri, "", ref.rel, None)
        try:
            fs, path = fsspec.core.url_to_fs(ref.uri)
            size = fs.size(path)
            if size is not None and size > max_bytes:
                record.error = f"file too large: {size} bytes exceeds --max-bytes {max_bytes}"
            else:
                record.data = fs.cat_file(path)
        except FileNotFoundError:
            record.error = "file disappeared before it could be read"
        except Exception as exc:
            record.error = f"read failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        yield record
