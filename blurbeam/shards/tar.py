"""WebDataset-style tar shards: ``*.tar``, and gzip-compressed ``*.tar.gz`` / ``*.tgz``, whose
members are grouped into samples by key.

The key of a member is its path up to the first dot of its file name (``dir/0001.seg.png`` belongs
to sample ``dir/0001``), as WebDataset groups them. Members whose last extension is jpg, jpeg, png
or webp are images: each yields one record keyed by its member name. So is any other member whose
bytes start like an image (a ``.bmp``, ``.tif`` or ``.bin`` holding a photo): it is anonymized
like the rest, or fails with its sample, and never copied through with its original pixels.
Every other member is read whole and searched with ``imageio.find_media``: image data at any
offset (16 bytes of junk before a JPEG), base64 or data-URI images in text (a ``.json``), or other
media that can show people but that blurbeam cannot look inside (video, compressed data or an
archive, PDF, a NumPy array) give the member an error record, and its sample (images included) is
left out of the output shard. So does a non-image member larger than ``--max-bytes``, which is
never read whole to be searched. The rest (``.json``, ``.txt``, ``.cls`` ...) is copied through
unchanged when the shard is rewritten, as are members whose extension after the key
(``seg.png``) is in ``ShardOptions.allow_image_fields`` (the user's word that they show no one).

Member names are untrusted. A member with an absolute name or a ``..`` component, a link or a
special file, or an image name that occurs twice makes its whole sample unusable: its images get
an error record and the sample is left out of the output shard. Nothing is ever extracted to disk.

Shards are read as a stream, also when rewritten (once to classify every member, once to copy):
a gzip-compressed shard is never decompressed whole, and no more than one member of at most
``--max-bytes`` is held decompressed at a time. A compressed shard is written back
gzip-compressed. A shard that is not a valid (compressed) tar gets one error record for the
shard.
"""

from __future__ import annotations

import copy
import gzip
import io
import posixpath
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import fsspec

from blurbeam.imageio import OPAQUE_SNIFF_BYTES, find_media, sniff_format
from blurbeam.shards import (
    ImageRecord,
    ShardFormat,
    ShardOptions,
    ShardRef,
    UnsafePathError,
    check_source,
    container_record,
    one_line_error,
    register_format,
    safe_relpath,
    shard_record,
    stray_image_error,
)

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp"})
#: File names of gzip-compressed tar shards.
GZIP_SUFFIXES = (".tar.gz", ".tgz")
#: What a shard that is not a valid tar, or whose compression is broken, raises while read.
_BROKEN = (tarfile.TarError, EOFError, zlib.error, OSError)


def sample_key(name: str) -> str:
    """WebDataset's key: the directory plus the file name up to its first dot."""
    directory, base = posixpath.split(name)
    stem = base.split(".", 1)[0]
    return posixpath.join(directory, stem) if directory else stem


def is_image(name: str) -> bool:
    base = posixpath.basename(name)
    return "." in base and base.rsplit(".", 1)[1].lower() in IMAGE_EXTS


def field_of(name: str) -> str:
    """WebDataset's extension: the file name after its first dot (``seg.png``)."""
    base = posixpath.basename(name)
    return base.split(".", 1)[1] if "." in base else ""


def image_member(name: str, head: bytes, opts: ShardOptions) -> bool:
    """Whether a file member is an image to anonymize: by its extension, else by its first
    bytes; never when its field is in ``opts.allow_image_fields``."""
    if field_of(name) in opts.allow_image_fields:
        return False
    return is_image(name) or sniff_format(head) is not None


SNIFF_BYTES = OPAQUE_SNIFF_BYTES


@dataclass
class _Member:
    name: str
    kind: str  # "file", "dir" or "other" (links, devices, fifos)
    size: int
    image: bool = False  # an image to anonymize (by name; files also by their first bytes)
    reject: str | None = None  # why this non-image member cannot be copied (media found in it)


def _kind(info: tarfile.TarInfo) -> str:
    return "file" if info.isfile() else "dir" if info.isdir() else "other"


def _unsafe_reason(name: str) -> str | None:
    try:
        safe_relpath(name)
    except UnsafePathError as exc:
        return str(exc)
    return None


def _bad_samples(members: list[_Member]) -> dict[str, str]:
    """Samples that can never be written back, with the reason."""
    bad: dict[str, str] = {}
    counts = Counter(m.name for m in members if m.image)
    for m in members:
        key = sample_key(m.name)
        reason = _unsafe_reason(m.name)
        if reason is None and m.kind == "other":
            reason = f"member {m.name!r} is a link or special file"
        if reason is None and m.image and counts[m.name] > 1:
            reason = f"image member {m.name!r} occurs {counts[m.name]} times"
        if reason is None and m.reject:
            reason = m.reject
        if reason is not None:
            bad.setdefault(key, reason)
    return bad


def _classify(
    tf: tarfile.TarFile, info: tarfile.TarInfo, opts: ShardOptions
) -> tuple[_Member, bytes | None]:
    """The member ``info`` of a tar read as a stream, and its bytes when it is an image that
    passes ``--max-bytes``. A file member that is neither an image nor an allowed field is read
    whole and searched for image and other media data (``imageio.find_media``)."""
    name = info.name
    m = _Member(name, _kind(info), info.size, image_member(name, b"", opts))
    if m.kind != "file" or _unsafe_reason(name) is not None:
        return m, None
    if field_of(name) in opts.allow_image_fields:
        return m, None
    if not m.image and info.size > opts.max_bytes:
        m.reject = (
            f"member {name!r} ({info.size} bytes) is larger than --max-bytes {opts.max_bytes}, "
            "so it cannot be searched for image data; raise --max-bytes, or pass "
            f"--allow-image-field {field_of(name) or name} if it shows no one"
        )
        return m, None
    if m.image and info.size > opts.max_bytes:
        return m, None  # its record says it is too large
    extracted = tf.extractfile(info)
    body = extracted.read() if extracted else b""
    m.image = image_member(name, body[:SNIFF_BYTES], opts)
    if m.image:
        return m, body
    media = find_media(body)
    if media:
        m.reject = stray_image_error("member", name, media, allow=field_of(name) or None)
    return m, None


def _open_stream(fh: BinaryIO, gz: bool) -> tarfile.TarFile:
    return tarfile.open(fileobj=fh, mode="r|gz" if gz else "r|")


def _scan(fh: BinaryIO, gz: bool, opts: ShardOptions) -> tuple[list[_Member], dict[int, bytes]]:
    """Every member of the tar stream ``fh``, and the bytes of its image members by index."""
    members: list[_Member] = []
    data: dict[int, bytes] = {}
    with _open_stream(fh, gz) as tf:
        for info in tf:
            m, body = _classify(tf, info, opts)
            if body is not None:
                data[len(members)] = body
            members.append(m)
    return members, data


def is_gzip(path: str) -> bool:
    return path.lower().endswith(GZIP_SUFFIXES)


@register_format
class TarFormat(ShardFormat):
    name = "tar"
    container = True

    def matches(self, path: str) -> bool:
        return path.lower().endswith((".tar", *GZIP_SUFFIXES))

    def _records(
        self, ref: ShardRef, members: list[_Member], data: dict[int, bytes], opts: ShardOptions
    ) -> list[ImageRecord]:
        bad = _bad_samples(members)
        records = []
        for i, m in enumerate(members):
            unsafe = _unsafe_reason(m.name)
            if not m.image and not m.reject and unsafe is None:
                continue
            error = None
            if unsafe is not None:
                error = f"unsafe member name rejected: {unsafe}"
            elif sample_key(m.name) in bad:
                error = f"sample {sample_key(m.name)!r} rejected: {bad[sample_key(m.name)]}"
            records.append(container_record(ref, m.name, m.size, data.get(i, b""), opts, error))
        if not records:
            records.append(shard_record(ref, "no image member (jpg, jpeg, png, webp) in tar shard"))
        return records

    def _read(self, ref: ShardRef, opts: ShardOptions, with_data: bool) -> list[ImageRecord]:
        fs, path = fsspec.core.url_to_fs(ref.uri)
        kind = "gzip-compressed tar" if is_gzip(path) else "tar"
        try:
            with fs.open(path, "rb") as fh:
                members, data = _scan(fh, is_gzip(path), opts)
        except FileNotFoundError:
            raise
        except _BROKEN as exc:
            return [shard_record(ref, f"not a valid {kind} shard: {one_line_error(exc)}")]
        return self._records(ref, members, data if with_data else {}, opts)

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        yield from self._read(ref, opts, True)

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        return [r.key for r in self._read(ref, opts, False)]

    def rewrite(
        self,
        source: bytes,
        replaced: dict[str, tuple[str, bytes]],
        opts: ShardOptions,
        written: set[str] | None = None,
    ) -> bytes:
        written = set() if written is None else written
        gz = source[:2] == b"\x1f\x8b"
        members, _ = _scan(io.BytesIO(source), gz, opts)
        drop = set(_bad_samples(members))
        for m in members:
            if (m.image and m.name not in replaced) or m.reject:
                drop.add(sample_key(m.name))
        out = io.BytesIO()
        sink: BinaryIO = gzip.GzipFile(fileobj=out, mode="wb", mtime=0) if gz else out
        with (
            _open_stream(io.BytesIO(source), gz) as src,
            tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as dst,
        ):
            for i, info in enumerate(src):
                if i >= len(members) or members[i].name != info.name:
                    raise ValueError("the tar shard read differently twice")
                if sample_key(info.name) in drop:
                    continue
                if not info.isfile():  # directories: nothing else survives _bad_samples
                    dst.addfile(copy.copy(info))
                    continue
                extracted = src.extractfile(info)
                if not members[i].image:  # checked when classified: copied as a stream
                    dst.addfile(copy.copy(info), extracted)
                    continue
                body = check_source(info.name, extracted.read() if extracted else b"", replaced)
                written.add(info.name)
                new = copy.copy(info)
                new.size = len(body)
                dst.addfile(new, io.BytesIO(body))
        if gz:
            sink.close()
        return out.getvalue()


def write_samples(samples: dict[str, dict[str, bytes]]) -> bytes:
    """A WebDataset tar of ``{key: {extension: bytes}}``, members in key order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for key in sorted(samples):
            for ext, body in samples[key].items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(body)
                info.mtime = 0
                tf.addfile(info, io.BytesIO(body))
    return out.getvalue()
