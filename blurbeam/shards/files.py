"""Plain files: each file is its own shard holding at most one image.

``file``: a file whose extension is an image's; it is read whole and decoded (a file that is not
an image after all fails at decode with an error record).

``other``: a file that no format claims by its name (``photo``, ``x.txt``, ``clip.mp4``). Its
first bytes decide: image data (``imageio.sniff_format``) is processed like any image file,
whatever the name says; anything else gets a ``skipped`` record naming what it is (``MP4/QuickTime
video``, ``unrecognised data``) and is not copied to the output.

A video (``video_muxer``) is a file no format claims by name whose name has a video extension
(and whose bytes are not an image's) or whose bytes start like a video container; the anonymize
pipeline routes it to ``transforms.video`` before it is read here.

``skipped``: hidden files (a name in the path starts with "."): a ``skipped`` record, nothing
copied.

A ``skipped`` record carries the file's sha256 (read in chunks, never whole), so coverage can tell
a changed file from a covered one. Only regular files are read: a FIFO, socket or device gets an
error record (reading a FIFO would block forever), and so does a broken symbolic link.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator

import fsspec

from blurbeam.imageio import (
    IMAGE_EXTENSIONS,
    OPAQUE_SNIFF_BYTES,
    sniff_format,
    sniff_media,
    sniff_opaque,
)
from blurbeam.shards import (
    OTHER_KIND,
    SKIPPED_KIND,
    ImageRecord,
    ShardFormat,
    ShardOptions,
    ShardRef,
    hash_file,
    is_local,
    register_format,
)


class _NotReadable(Exception):
    """A file that is not to be read (not a regular file, broken link, too large)."""


def _check_local(path: str) -> None:
    """Refuse anything but a regular file (following symlinks) before opening it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _NotReadable(
                f"broken symbolic link: its target {os.readlink(path)!r} does not exist"
            ) from None
        raise
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file"
        )
        raise _NotReadable(f"not a regular file: {what}; not read")


def _open_checked(uri: str, max_bytes: int | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        _check_local(path)
    if max_bytes is not None:
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise _NotReadable(f"file too large: {size} bytes exceeds --max-bytes {max_bytes}")
    return fs, path


def _read_error(exc: Exception) -> str:
    if isinstance(exc, _NotReadable):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "file disappeared before it could be read"
    return f"read failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _skipped(ref: ShardRef, reason: str) -> ImageRecord:
    """The ``skipped`` record of a file that is not processed, with its sha256."""
    record = ImageRecord(ref.uri, ref.uri, "", ref.rel, None, skipped=reason)
    try:
        fs, path = _open_checked(ref.uri, None)
        record.sha256 = hash_file(fs, path)
    except Exception as exc:
        record.skipped = None
        record.error = _read_error(exc)
    return record


def _read_whole(ref: ShardRef, opts: ShardOptions) -> ImageRecord:
    record = ImageRecord(ref.uri, ref.uri, "", ref.rel, None)
    try:
        fs, path = _open_checked(ref.uri, opts.max_bytes)
        record.data = fs.cat_file(path)
    except Exception as exc:
        record.error = _read_error(exc)
    return record


#: Output container (FFmpeg muxer) per video file extension.
VIDEO_MUXERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
}
#: The most frames a video may have (``--max-frames``).
DEFAULT_MAX_FRAMES = 1_000_000
#: The sparsest video search ``--video-detect-every`` allows: the sparsest measured
#: (docs/BENCHMARKS.md, Video; the fast setting, chosen on pool886 clips, is every 2nd frame);
#: sparser search is unmeasured, and tracks hold a face only 10 frames past its last detection.
MAX_VIDEO_DETECT_EVERY = 3
#: The length a video is cut into segments of, at keyframes (``--video-segment-seconds``).
DEFAULT_SEGMENT_SECONDS = 10.0
#: The container a video is written back as when its name has no video extension, by what
#: ``imageio.sniff_opaque`` says its bytes are.
VIDEO_MEDIA = {
    "MP4/QuickTime video": "mp4",
    "Matroska/WebM video": "matroska",
    "AVI video": "avi",
}


def video_muxer(ref: ShardRef) -> str | None:
    """The container a file of kind ``other`` is written back as when it is a video, else None:
    by its name's extension unless its first bytes are an image's (an image is an image by its
    bytes), or by its first bytes (a video signature) whatever its name. A file that cannot be
    read is not a video here (the plain-file path gives it its error record)."""
    if ref.kind != OTHER_KIND:
        return None
    try:
        fs, path = _open_checked(ref.uri, None)
        with fs.open(path, "rb") as fh:
            head = fh.read(OPAQUE_SNIFF_BYTES)
    except Exception:
        return None
    if sniff_format(head) is not None:
        return None
    by_name = VIDEO_MUXERS.get(posixpath.splitext(ref.rel)[1].lower())
    return by_name or VIDEO_MEDIA.get(sniff_opaque(head) or "")


@register_format
class FileFormat(ShardFormat):
    name = "file"

    def matches(self, path: str) -> bool:
        return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        return [""]

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        yield _read_whole(ref, opts)


@register_format
class OtherFileFormat(ShardFormat):
    """A file no format claims by name: an image if its bytes say so, else skipped."""

    name = OTHER_KIND

    def matches(self, path: str) -> bool:
        return False  # only ever assigned by expand_input(every_file=True)

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        return [""]

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        try:
            fs, path = _open_checked(ref.uri, None)
            with fs.open(path, "rb") as fh:
                head = fh.read(OPAQUE_SNIFF_BYTES)
        except Exception as exc:
            yield ImageRecord(ref.uri, ref.uri, "", ref.rel, None, _read_error(exc))
            return
        if sniff_format(head) is not None:
            yield _read_whole(ref, opts)
            return
        media = sniff_media(head)
        what = f"{media} data" if media else ("an empty file" if not head else "unrecognised data")
        yield _skipped(ref, f"not an image: {what}; not copied to the output")


@register_format
class SkippedFileFormat(ShardFormat):
    """A file listed only to be recorded (hidden files): the reason is the ShardRef's."""

    name = SKIPPED_KIND

    def matches(self, path: str) -> bool:
        return False

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        return [""]

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        yield _skipped(ref, f"{ref.reason or 'not processed'}; not copied to the output")
