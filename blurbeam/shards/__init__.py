"""Shards: where image records come from. Pure code: no Beam.

``expand_input(spec)`` turns the user's ``--input`` (a file, a directory, a glob or an fsspec URL)
into ``ShardRef``s; ``read_records(ref)`` turns one shard into ``ImageRecord``s. A shard format is
one module of this package defining a ``ShardFormat`` subclass decorated with ``@register_format``:
``files`` (each image file is its own shard), ``tar`` (WebDataset), ``parquet`` and ``tfrecord``.
Container formats (many images per shard) are streamed whole by ``stream_shard``: the source is
read once, member by member (``ShardFormat.transform``), each image is handed to a caller's function
that returns its new bytes, and the output shard is written as it goes, in the source's format with
everything else unchanged, then published whole (``AtomicWriter``). Memory is bounded by a few
images (a tar sample, a TFRecord Example, a Parquet row group), never the shard.
Storage goes through fsspec, so every filesystem fsspec knows works the same way.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pkgutil
import posixpath
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, TypeVar

import fsspec

from blurbeam.errors import one_line

DEFAULT_MAX_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ShardRef:
    kind: str  # the ShardFormat name, e.g. "file"
    uri: str  # where the shard is (a local path or an fsspec URL)
    rel: str  # its path relative to the input root, "/"-separated; mirrored under --output
    reason: str = ""  # kind "skipped": why blurbeam does not process this file


@dataclass
class ImageRecord:
    source_uri: str  # the image: the file, or "shard_uri#member" inside a container shard
    shard_uri: str
    key: str  # the image's key within the shard ("" for a plain file)
    rel: str  # output path relative to --output
    data: bytes | None
    error: str | None = None  # set when the record could not be read
    skipped: str | None = None  # set when the input is deliberately not processed (the reason)
    sha256: str | None = None  # the input's sha256 when ``data`` is not kept (skipped files)


@dataclass(frozen=True)
class ShardOptions:
    """How shards are read: limits and format-specific choices."""

    max_bytes: int = DEFAULT_MAX_BYTES  # larger images (or image members) are rejected unread
    image_column: str | None = None  # Parquet: the image column (default: detected)
    #: Fields that may hold image data and are copied through unchanged on the user's word that
    #: they show no one (segmentation masks, depth maps): a tar member's extension after its
    #: key (``seg.png``), a Parquet column or a TFRecord feature name. Any other field whose
    #: bytes start like an image is anonymized (tar members) or rejected (columns, features).
    allow_image_fields: tuple[str, ...] = ()


def stray_image_error(what: str, name: str, media: str, allow: str | None = None) -> str:
    """The audit reason for image data or other media that can show people (``media``, as
    ``imageio.sniff_media`` words it: "JPEG image", "MP4/QuickTime video") found where no image
    is anonymized (``what``: column, feature, member...; ``name``: its name; ``allow``: what
    ``--allow-image-field`` would take, by default ``name``)."""
    return (
        f"{what} {name!r} holds {media} data that is not anonymized, so this is left out of the "
        f"output; pass --allow-image-field {allow or name} if it shows no one"
        + (" (e.g. masks)" if media.endswith(" image") else "")
    )


class InputError(Exception):
    """The --input spec itself is unusable (nothing matches, unreadable root...)."""


class UnsafePathError(ValueError):
    """A relative path (e.g. an archive member name) would escape the output root."""


class ShardReadError(ValueError):
    """A container shard that cannot be read as its format (not a valid tar...); the message is
    its one audit reason."""


T = TypeVar("T")

#: What ``ShardFormat.transform`` does with each image it reads: ``process(record)`` returns an
#: opaque result (kept with the record's outcome) and the image's new bytes, or None when the
#: image failed (it is then left out of the output with its sample, row or Example).
Process = Callable[[ImageRecord], tuple[T, bytes | None]]


@dataclass
class Outcome(Generic[T]):
    """What became of one record of a streamed shard."""

    record: ImageRecord  # its ``data`` dropped once processed
    result: T | None = None  # what ``process`` returned; None when it was not called (errors)
    written: bool = False  # its new bytes are in the output shard


class ShardFormat:
    """One kind of shard. ``matches`` decides from a file name whether a file is of this kind.

    ``read`` yields one ``ImageRecord`` per image (a record with ``error`` set for an image that
    cannot be read: too large, unsafe member name...). Container formats (``container = True``)
    also implement ``transform`` and ``keys``; their records' ``key`` is unique within the shard
    and ``rel`` is the shard's own relative path. ``sequential`` formats read their source front
    to back without seeking (tar, TFRecord), so ``stream_shard`` hashes it while reading.
    """

    name: str = ""
    container: bool = False
    sequential: bool = True

    def matches(self, path: str) -> bool:
        raise NotImplementedError

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        raise NotImplementedError

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        """The key of every image in the shard (for coverage reports); reads no more than needed."""
        return [r.key for r in self.read(ref, opts)]

    def transform(
        self,
        ref: ShardRef,
        src: BinaryIO,
        sink: BinaryIO,
        opts: ShardOptions,
        process: Process[T],
    ) -> list[Outcome[T]]:
        """Read the shard ``ref`` from ``src`` once, in order, and write it to ``sink`` in its
        own format: each image record without an error goes through ``process`` as soon as its
        sample (tar sample, Parquet row group, TFRecord Example) is read, and is written with
        its new bytes; a failed image is left out together with its sample (a tar sample, a
        Parquet row, an Example), and so is every image of a sample holding a record with an
        error; everything else is copied unchanged. Returns one outcome per record, in shard
        order (``read``'s records). Raises ``ShardReadError`` when the source is not a valid
        shard of this format."""
        raise NotImplementedError(f"{self.name} shards cannot be streamed")


_FORMATS: dict[str, ShardFormat] = {}
_DISCOVERED = False


def register_format(cls: type[ShardFormat]) -> type[ShardFormat]:
    _FORMATS[cls.name] = cls()
    return cls


def formats() -> dict[str, ShardFormat]:
    global _DISCOVERED
    if not _DISCOVERED:
        _DISCOVERED = True
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")
    return _FORMATS


def get_format(kind: str) -> ShardFormat:
    try:
        return formats()[kind]
    except KeyError:
        raise ValueError(f"unknown shard kind {kind!r}") from None


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)


def safe_relpath(rel: str) -> str:
    """Normalise a relative output path; reject absolute paths, drive letters and ``..``."""
    if not rel or "\x00" in rel:
        raise UnsafePathError(f"unsafe path {rel!r}: empty or contains NUL")
    rel = rel.replace("\\", "/")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise UnsafePathError(f"unsafe path {rel!r}: absolute")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        raise UnsafePathError(f"unsafe path {rel!r}: escapes the output directory")
    return "/".join(parts)


def join_output(root: str, rel: str) -> str:
    rel = safe_relpath(rel)
    return (
        posixpath.join(root.rstrip("/"), rel)
        if "://" in root
        else os.path.join(root, *rel.split("/"))
    )


def canonical(uri: str) -> str:
    """One string per place: a local path fully resolved (symlinks, ``.``, ``..``, ``//``), an
    fsspec URL with its protocol and its path normalised the same way. Two spellings of one
    location give the same string; compare locations only through this."""
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        return os.path.realpath(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"{protocol}://" + posixpath.normpath("/" + path.lstrip("/")).lstrip("/")


def is_within(path: str, root: str) -> bool:
    """Whether canonical ``path`` is ``root`` or lies under it (both from ``canonical``)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_target(root: str, uri: str, source: str | None = None) -> None:
    """Refuse to write ``uri`` unless it lies under the output ``root`` as a place (a symlinked
    folder inside the output cannot redirect a write elsewhere) and is not the ``source`` file
    itself. Raises UnsafePathError."""
    target = canonical(uri)
    folder = canonical(posixpath.dirname(uri) if "://" in uri else os.path.dirname(uri))
    if not is_within(folder, canonical(root)):
        raise UnsafePathError(f"refusing to write {uri!r}: it resolves outside the output")
    if source and canonical(source) == target:
        raise UnsafePathError(f"refusing to write {uri!r}: it is the input file itself")


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _match_kind(path: str) -> str | None:
    for fmt in formats().values():
        if fmt.matches(path):
            return fmt.name
    return None


#: ShardRef kinds that ``expand_input(every_file=True)`` gives files that no format claims by
#: name: "other" is sniffed when read (an image without an image extension is processed),
#: "skipped" is never read for pixels (hidden files) and gets a record saying why.
OTHER_KIND = "other"
SKIPPED_KIND = "skipped"


def input_root(
    spec: str, list_files: bool = True
) -> tuple[fsspec.AbstractFileSystem, str, str, list[str]]:
    """``(fs, path, root, candidates)`` for ``--input``: the root whose relative paths are
    mirrored under ``--output``, and every file the spec names (an empty list without
    ``list_files``, which checks only that the spec exists)."""
    fs, path = fsspec.core.url_to_fs(spec)
    path = path.rstrip("/") or "/"
    candidates: list[str] = []
    if _has_magic(path):
        root = path
        while _has_magic(root):
            root = posixpath.dirname(root)
        if list_files:
            candidates = [p for p in fs.glob(path) if not fs.isdir(p)]
    elif fs.isdir(path):
        root = path
        if list_files:
            candidates = fs.find(path)
    elif fs.exists(path) or (is_local(fs) and os.path.islink(path)):
        root = posixpath.dirname(path)
        candidates = [path]
    else:
        raise InputError(f"--input {spec!r} does not exist")
    return fs, path, root, candidates


def expand_input(
    spec: str, exclude: str | None = None, every_file: bool = False
) -> Iterator[ShardRef]:
    """All shards named by ``spec``, sorted. Anything under ``exclude`` (the output directory,
    when it lies inside the input) is left out, compared as canonical locations, so another
    spelling of the same place or a symlink into it is left out too.

    By default hidden files and directories (".name") and files no shard format claims by name
    are left out (the evaluate and deblur pipelines). With ``every_file`` (anonymize, report)
    every file is listed: hidden ones with kind ``skipped`` and the others with kind ``other``,
    so that each gets exactly one audit record.
    """
    fs, _, root, candidates = input_root(spec)
    local = is_local(fs)
    excl = canonical(exclude) if exclude else None
    found = False
    for p in sorted(candidates):
        rel = posixpath.relpath(p, root) if root not in ("", "/") else p.lstrip("/")
        if excl and is_within(canonical(to_uri(fs, p)), excl):
            continue
        if local and os.path.isdir(p):
            continue  # a symlink to a directory: find() lists its files under it already
        uri = to_uri(fs, p)
        if any(part.startswith(".") for part in rel.split("/")):
            if every_file:
                found = True
                yield ShardRef(SKIPPED_KIND, uri, rel, "hidden file (a name starts with '.')")
            continue
        kind = _match_kind(p)
        if kind is None:
            if not every_file:
                continue
            kind = OTHER_KIND
        found = True
        yield ShardRef(kind=kind, uri=uri, rel=rel)
    if not found:
        raise InputError(f"--input {spec!r} holds no images or shards we can read")


def read_records(
    ref: ShardRef, max_bytes: int = DEFAULT_MAX_BYTES, opts: ShardOptions | None = None
) -> Iterator[ImageRecord]:
    return get_format(ref.kind).read(ref, opts or ShardOptions(max_bytes=max_bytes))


def kind_of(uri: str) -> str:
    """The shard kind of a file, from its name (as ``expand_input`` decides it)."""
    kind = _match_kind(fsspec.core.url_to_fs(uri)[1])
    if kind is None:
        raise ValueError(f"not a shard we can read: {uri!r}")
    return kind


def member_uri(shard_uri: str, key: str) -> str:
    """The URI of one image inside a container shard."""
    return f"{shard_uri}#{key}"


def container_record(
    ref: ShardRef,
    key: str,
    size: int,
    data: bytes | None,
    opts: ShardOptions,
    error: str | None = None,
) -> ImageRecord:
    """The record of one image inside a container shard: ``error`` if given, else the
    ``--max-bytes`` check on ``size``; ``data`` (None when only keys are wanted) is kept only
    when the image passes."""
    rec = ImageRecord(member_uri(ref.uri, key), ref.uri, key, ref.rel, None)
    if error is not None:
        rec.error = error
    elif size > opts.max_bytes:
        rec.error = f"image too large: {size} bytes exceeds --max-bytes {opts.max_bytes}"
    else:
        rec.data = data
    return rec


def shard_record(ref: ShardRef, error: str) -> ImageRecord:
    """The one record of a container shard that yields no image record (key empty), so that
    even an empty or unusable shard is never silently lost."""
    return ImageRecord(ref.uri, ref.uri, "", ref.rel, None, error)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_file(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The sha256 of a whole file, read in 1 MiB chunks (never held whole)."""
    h = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(uri: str) -> str | None:
    """``hash_file`` of a URI; None when it cannot be read."""
    try:
        return hash_file(*fsspec.core.url_to_fs(uri))
    except Exception:
        return None


def _temporary_name(path: str) -> str:
    """A temporary file beside ``path``, hidden (a dot name: coverage and cleanup ignore it)."""
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file so a reader never sees half of it: on local disks a temporary file in
    the same directory is renamed over the target; object stores publish whole objects anyway."""
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = _temporary_name(path)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        fs.pipe_file(path, data)


class AtomicWriter(io.RawIOBase):
    """A file written as a stream and published whole by ``commit``, as ``write_bytes`` publishes
    bytes: on local disks into a hidden temporary file beside the target, renamed over it; on
    other filesystems into a local temporary file, uploaded to the target by ``commit`` (so a
    reader never sees a partial object, and memory holds no more than the writes in flight).
    ``discard`` removes the temporary file; nothing is created before the first write.

    A failed write does not raise: the first error is kept (``error``), later writes are
    ignored, and ``commit`` raises it. A reader of the source can so go on to its end (every
    input still gets its record) when the output cannot be written."""

    def __init__(self, uri: str) -> None:
        super().__init__()
        self.uri = uri
        self._fs, self._path = fsspec.core.url_to_fs(uri)
        self._local = is_local(self._fs)
        self._tmp: str | None = None
        self._fh: BinaryIO | None = None
        self._pos = 0
        self.error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _open(self) -> BinaryIO:
        if self._local:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            self._tmp = _temporary_name(self._path)
        else:
            fd, self._tmp = tempfile.mkstemp(prefix=".blurbeam-", suffix=".tmp")
            os.close(fd)
        return open(self._tmp, "wb")

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        if self.error is None:
            try:
                if self._fh is None:
                    self._fh = self._open()
                self._fh.write(data)
            except Exception as exc:
                self.error = exc
        self._pos += n
        return n

    def commit(self) -> None:
        """Publish what was written at ``uri`` (an empty file when nothing was); raises the
        first write error, or the error of the rename or upload."""
        try:
            if self.error is not None:
                raise self.error
            if self._fh is None:
                self._fh = self._open()
            self._fh.close()
            if self._local:
                os.replace(self._tmp, self._path)
            else:
                self._fs.put_file(self._tmp, self._path)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop what was written; the target is left as it was."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        if self._tmp is not None and os.path.exists(self._tmp):
            os.unlink(self._tmp)
        self._tmp = None
        self.close()


class HashingReader(io.RawIOBase):
    """A sequential reader that hashes every byte it reads (the shard's sha256 in the same pass
    that reads it); ``finish`` reads the rest (a tar's trailing padding) and returns the hash."""

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__()
        self._fh = fh
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._fh.read(-1 if size is None else size)
        self._hash.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def finish(self) -> str:
        while self.read(1 << 20):
            pass
        return self._hash.hexdigest()


class _NullSink(io.RawIOBase):
    """Where a shard is streamed when it is not to be written: counts bytes, keeps none."""

    def __init__(self) -> None:
        super().__init__()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        self._pos += n
        return n


@dataclass
class Streamed(Generic[T]):
    """The result of ``stream_shard``."""

    outcomes: list[Outcome[T]]  # one per record, in shard order
    sha256: str  # of the source shard's bytes
    published: bool  # the output shard was written
    write_error: str | None = None  # why the output shard could not be written


def stream_shard(
    ref: ShardRef, opts: ShardOptions, process: Process[T], output_uri: str | None
) -> Streamed[T]:
    """Stream the container shard ``ref`` through ``process`` into ``output_uri``
    (``ShardFormat.transform``). The output is published only when at least one image got new
    bytes; without ``output_uri`` nothing is written (and ``write_error`` says so when an image
    had new bytes). The source is read once; a format that needs random access (Parquet: its
    footer comes last) is hashed in a separate chunked pass. Raises ``ShardReadError`` for a
    shard that is not valid in its format and OSError when the source cannot be read."""
    fmt = get_format(ref.kind)
    fs, path = fsspec.core.url_to_fs(ref.uri)
    digest = None if fmt.sequential else hash_file(fs, path)
    produced = False

    def counted(rec: ImageRecord) -> tuple[T, bytes | None]:
        nonlocal produced
        result, body = process(rec)
        produced = produced or body is not None
        return result, body

    sink: BinaryIO = AtomicWriter(output_uri) if output_uri else _NullSink()
    try:
        with fs.open(path, "rb") as raw:
            src = HashingReader(raw) if fmt.sequential else raw
            outcomes = fmt.transform(ref, src, sink, opts, counted)
            if isinstance(src, HashingReader):
                digest = src.finish()
    except BaseException:
        if isinstance(sink, AtomicWriter):
            sink.discard()
        raise
    write_error = None
    published = False
    if isinstance(sink, AtomicWriter) and produced:
        try:
            sink.commit()
            published = True
        except Exception as exc:
            write_error = one_line(exc)
    elif isinstance(sink, AtomicWriter):
        sink.discard()
    elif produced:
        write_error = "no output location"
    return Streamed(outcomes, digest or "", published, write_error)
