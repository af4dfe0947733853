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
unchanged when the shard is written back, as are members whose extension after the key
(``seg.png``) is in ``ShardOptions.allow_image_fields`` (the user's word that they show no one).

Member names are untrusted. A member with an absolute name or a ``..`` component, a link or a
special file, or an image name that occurs twice makes its whole sample unusable: its images get
an error record and the sample is left out of the output shard. Nothing is ever extracted to disk.

Shards are read once, as a stream (``tarfile`` stream mode, gzip included): a sample is the run
of consecutive members sharing a key, as WebDataset readers see it, and ``transform`` holds one
sample at a time: its images in memory (each within ``--max-bytes``), its other members in a
spooled temporary file (memory up to ``SPOOL_BYTES``, then disk), written out or left out as a
whole once its images are processed. A key that comes back after other samples starts a sample
of its own (WebDataset readers split it the same way); an image name seen in an earlier sample
makes the later sample unusable. A compressed shard is written back gzip-compressed. A shard
that is not a valid (compressed) tar gets one error record for the shard.
"""

from __future__ import annotations

import copy
import gzip
import io
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, TypeVar

import fsspec

from blurbeam.errors import one_line
from blurbeam.imageio import OPAQUE_SNIFF_BYTES, find_media, sniff_format
from blurbeam.shards import (
    ImageRecord,
    Outcome,
    Process,
    ShardFormat,
    ShardOptions,
    ShardReadError,
    ShardRef,
    UnsafePathError,
    container_record,
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
T = TypeVar("T")


@dataclass
class _Member:
    name: str
    kind: str  # "file", "dir" or "other" (links, devices, fifos)
    size: int
    image: bool = False  # an image to anonymize (by name; files also by their first bytes)
    reject: str | None = None  # why this non-image member cannot be copied (media found in it)


#: Memory a sample's non-image members may take before they spill to a temporary file.
SPOOL_BYTES = 8 * 1024 * 1024


@dataclass
class _Entry:
    """One member of the sample being read: what it is, and what ``transform`` needs to write
    it back (an image's bytes, another file member's bytes spooled)."""

    info: tarfile.TarInfo
    member: _Member
    body: bytes | None = None  # an image's bytes (within --max-bytes)
    copy: IO[bytes] | None = None  # another file member's bytes, to copy through unchanged

    def close(self) -> None:
        if self.copy is not None:
            self.copy.close()


def _spool() -> IO[bytes]:
    """A temporary file for one member's bytes, in memory up to ``SPOOL_BYTES``; the entry
    holding it closes it (``_Entry.close``) when its sample is done."""
    return tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115


def _kind(info: tarfile.TarInfo) -> str:
    return "file" if info.isfile() else "dir" if info.isdir() else "other"


def _unsafe_reason(name: str) -> str | None:
    try:
        safe_relpath(name)
    except UnsafePathError as exc:
        return str(exc)
    return None


def _bad_sample(members: list[_Member], seen: set[str]) -> str | None:
    """Why the sample ``members`` (one key) can never be written back, or None. ``seen`` holds
    the image names of the samples before it."""
    counts = Counter(m.name for m in members if m.image)
    for m in members:
        reason = _unsafe_reason(m.name)
        if reason is None and m.kind == "other":
            reason = f"member {m.name!r} is a link or special file"
        if reason is None and m.image and counts[m.name] > 1:
            reason = f"image member {m.name!r} occurs {counts[m.name]} times"
        if reason is None and m.image and m.name in seen:
            reason = f"image member {m.name!r} occurs more than once in the shard"
        if reason is None and m.reject:
            reason = m.reject
        if reason is not None:
            return reason
    return None


def _classify(tf: tarfile.TarFile, info: tarfile.TarInfo, opts: ShardOptions, keep: bool) -> _Entry:
    """The member ``info`` of a tar read as a stream, with its bytes when it is an image that
    passes ``--max-bytes``. A file member that is neither an image nor an allowed field is read
    whole and searched for image and other media data (``imageio.find_media``). With ``keep``
    the bytes of every other file member that can be copied are spooled (``_Entry.copy``)."""
    name = info.name
    entry = _Entry(info, _Member(name, _kind(info), info.size, image_member(name, b"", opts)))
    m = entry.member
    if m.kind != "file" or _unsafe_reason(name) is not None:
        return entry
    if field_of(name) in opts.allow_image_fields:
        extracted = tf.extractfile(info)
        if keep and extracted is not None:
            entry.copy = _spool()
            shutil.copyfileobj(extracted, entry.copy)
        return entry
    if not m.image and info.size > opts.max_bytes:
        m.reject = (
            f"member {name!r} ({info.size} bytes) is larger than --max-bytes {opts.max_bytes}, "
            "so it cannot be searched for image data; raise --max-bytes, or pass "
            f"--allow-image-field {field_of(name) or name} if it shows no one"
        )
        return entry
    if m.image and info.size > opts.max_bytes:
        return entry  # its record says it is too large
    extracted = tf.extractfile(info)
    body = extracted.read() if extracted else b""
    m.image = image_member(name, body[:SNIFF_BYTES], opts)
    if m.image:
        entry.body = body
        return entry
    media = find_media(body)
    if media:
        m.reject = stray_image_error("member", name, media, allow=field_of(name) or None)
    elif keep:
        entry.copy = _spool()
        entry.copy.write(body)
    return entry


def _open_stream(fh: BinaryIO, gz: bool) -> tarfile.TarFile:
    return tarfile.open(fileobj=fh, mode="r|gz" if gz else "r|")


def _samples(fh: BinaryIO, gz: bool, opts: ShardOptions, keep: bool) -> Iterator[list[_Entry]]:
    """The samples of the tar stream ``fh`` in order: runs of consecutive members sharing a
    key. The entries of a sample are closed once the next one is asked for."""
    sample: list[_Entry] = []
    try:
        with _open_stream(fh, gz) as tf:
            for info in tf:
                entry = _classify(tf, info, opts, keep)
                if sample and sample_key(info.name) != sample_key(sample[0].info.name):
                    yield sample
                    for e in sample:
                        e.close()
                    sample = []
                sample.append(entry)
        if sample:
            yield sample
    finally:
        for e in sample:
            e.close()


def _sample_records(
    ref: ShardRef, sample: list[_Entry], opts: ShardOptions, seen: set[str]
) -> list[tuple[_Entry, ImageRecord]]:
    """The records of one sample's images and rejected members, with their entries; adds the
    sample's image names to ``seen``."""
    members = [e.member for e in sample]
    bad = _bad_sample(members, seen)
    seen.update(m.name for m in members if m.image)
    key = sample_key(members[0].name)
    records = []
    for e in sample:
        m = e.member
        unsafe = _unsafe_reason(m.name)
        if not m.image and not m.reject and unsafe is None:
            continue
        error = None
        if unsafe is not None:
            error = f"unsafe member name rejected: {unsafe}"
        elif bad is not None:
            error = f"sample {key!r} rejected: {bad}"
        records.append((e, container_record(ref, m.name, m.size, e.body or b"", opts, error)))
    return records


def is_gzip(path: str) -> bool:
    return path.lower().endswith(GZIP_SUFFIXES)


def _kind_name(uri: str) -> str:
    return "gzip-compressed tar" if is_gzip(uri) else "tar"


NO_IMAGE = "no image member (jpg, jpeg, png, webp) in tar shard"


@register_format
class TarFormat(ShardFormat):
    name = "tar"
    container = True

    def matches(self, path: str) -> bool:
        return path.lower().endswith((".tar", *GZIP_SUFFIXES))

    def _read(self, ref: ShardRef, opts: ShardOptions, with_data: bool) -> list[ImageRecord]:
        fs, path = fsspec.core.url_to_fs(ref.uri)
        records: list[ImageRecord] = []
        seen: set[str] = set()
        try:
            with fs.open(path, "rb") as fh:
                for sample in _samples(fh, is_gzip(path), opts, keep=False):
                    for _, rec in _sample_records(ref, sample, opts, seen):
                        if not with_data:
                            rec.data = None
                        records.append(rec)
        except FileNotFoundError:
            raise
        except _BROKEN as exc:
            reason = f"not a valid {_kind_name(path)} shard: {one_line(exc)}"
            return [shard_record(ref, reason)]
        return records or [shard_record(ref, NO_IMAGE)]

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        yield from self._read(ref, opts, True)

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        return [r.key for r in self._read(ref, opts, False)]

    def transform(
        self,
        ref: ShardRef,
        src: BinaryIO,
        sink: BinaryIO,
        opts: ShardOptions,
        process: Process[T],
    ) -> list[Outcome[T]]:
        gz = is_gzip(ref.uri)
        outcomes: list[Outcome[T]] = []
        seen: set[str] = set()
        out: BinaryIO = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0) if gz else sink
        try:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
                for sample in _samples(src, gz, opts, keep=True):
                    outcomes += _write_sample(ref, sample, opts, seen, process, dst)
        except FileNotFoundError:
            raise
        except _BROKEN as exc:
            reason = f"not a valid {_kind_name(ref.uri)} shard: {one_line(exc)}"
            raise ShardReadError(reason) from None
        finally:
            if gz:
                out.close()
        return outcomes or [Outcome(shard_record(ref, NO_IMAGE))]


def _write_sample(
    ref: ShardRef,
    sample: list[_Entry],
    opts: ShardOptions,
    seen: set[str],
    process: Process[T],
    dst: tarfile.TarFile,
) -> list[Outcome[T]]:
    """Process the images of one sample; write the sample when every image got new bytes and
    nothing in it was rejected, else leave it out whole."""
    outcomes: list[Outcome[T]] = []
    new: dict[int, bytes] = {}
    complete = True
    for entry, rec in _sample_records(ref, sample, opts, seen):
        outcome: Outcome[T] = Outcome(rec)
        if rec.error is None:
            outcome.result, body = process(rec)
            if body is not None:
                new[id(entry)] = body
        rec.data = None
        entry.body = None
        complete = complete and id(entry) in new
        outcomes.append(outcome)
    if not complete:
        return outcomes
    for entry in sample:
        info = copy.copy(entry.info)
        if id(entry) in new:
            body = new.pop(id(entry))
            info.size = len(body)
            dst.addfile(info, io.BytesIO(body))
        elif entry.copy is not None:
            entry.copy.seek(0)
            dst.addfile(info, entry.copy)
        else:  # a directory (nothing else survives _bad_sample)
            dst.addfile(info)
    for outcome in outcomes:
        outcome.written = True
    return outcomes


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
