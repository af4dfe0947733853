"""WebDataset-style tar shards: ``*.tar`` whose members are grouped into samples by key.

The key of a member is its path up to the first dot of its file name (``dir/0001.seg.png`` belongs
to sample ``dir/0001``), as WebDataset groups them. Members whose last extension is jpg, jpeg, png
or webp are images: each yields one record keyed by its member name. So is any other member whose
bytes start like an image (a ``.bmp``, ``.tif`` or ``.bin`` holding a photo): it is anonymized
like the rest, or fails with its sample, and never copied through with its original pixels.
A member whose bytes are other media that can show people but that blurbeam cannot look inside
(video, compressed data or an archive, PDF, a NumPy array: ``imageio.sniff_opaque``) gets an
error record, and its sample (images included) is left out of the output shard.
Every other member (``.json``, ``.txt``, ``.cls`` ...) is copied through unchanged when the shard
is rewritten, as are members whose extension after the key (``seg.png``) is in
``ShardOptions.allow_image_fields`` (the user's word that they show no one).

Member names are untrusted. A member with an absolute name or a ``..`` component, a link or a
special file, or an image name that occurs twice makes its whole sample unusable: its images get
an error record and the sample is left out of the output shard. Nothing is ever extracted to disk.
"""

from __future__ import annotations

import copy
import io
import posixpath
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

from blurbeam.imageio import OPAQUE_SNIFF_BYTES, sniff_format, sniff_opaque
from blurbeam.shards import (
    ImageRecord,
    ShardFormat,
    ShardOptions,
    ShardRef,
    UnsafePathError,
    check_source,
    container_record,
    register_format,
    safe_relpath,
    shard_record,
    stray_image_error,
)

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp"})


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
    opaque: str | None = None  # other media we cannot anonymize (video, archive...): its kind

    def sniff(self, head: bytes, opts: ShardOptions) -> None:
        """Classify a file member from its first bytes: an image to anonymize, other media we
        cannot anonymize (video, an archive...: ``opaque``), or neither."""
        self.image = image_member(self.name, head, opts)
        allowed = field_of(self.name) in opts.allow_image_fields
        self.opaque = None if self.image or allowed else sniff_opaque(head)


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
        if reason is None and m.opaque:
            reason = stray_image_error("member", m.name, m.opaque, allow=field_of(m.name) or None)
        if reason is not None:
            bad.setdefault(key, reason)
    return bad


def _member(tf: tarfile.TarFile, info: tarfile.TarInfo, opts: ShardOptions) -> _Member:
    """A member of a random-access tar, with its first bytes sniffed when it is a file."""
    m = _Member(info.name, _kind(info), info.size, image_member(info.name, b"", opts))
    if m.kind == "file" and _unsafe_reason(m.name) is None:
        extracted = tf.extractfile(info)
        m.sniff(extracted.read(SNIFF_BYTES) if extracted else b"", opts)
    return m


@register_format
class TarFormat(ShardFormat):
    name = "tar"
    container = True

    def matches(self, path: str) -> bool:
        return path.lower().endswith(".tar")

    def _records(
        self, ref: ShardRef, members: list[_Member], data: dict[int, bytes], opts: ShardOptions
    ) -> list[ImageRecord]:
        bad = _bad_samples(members)
        records = []
        for i, m in enumerate(members):
            unsafe = _unsafe_reason(m.name)
            if not m.image and not m.opaque and unsafe is None:
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

    def read(self, ref: ShardRef, opts: ShardOptions) -> Iterator[ImageRecord]:
        fs, path = fsspec.core.url_to_fs(ref.uri)
        members: list[_Member] = []
        data: dict[int, bytes] = {}
        with fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r|") as tf:
            for info in tf:
                m = _Member(info.name, _kind(info), info.size, image_member(info.name, b"", opts))
                if m.kind == "file" and _unsafe_reason(m.name) is None:
                    extracted = tf.extractfile(info)
                    head = extracted.read(SNIFF_BYTES) if extracted else b""
                    m.sniff(head, opts)
                    if m.image and m.size <= opts.max_bytes and extracted is not None:
                        data[len(members)] = head + extracted.read()
                members.append(m)
        yield from self._records(ref, members, data, opts)

    def keys(self, ref: ShardRef, opts: ShardOptions) -> list[str]:
        fs, path = fsspec.core.url_to_fs(ref.uri)
        with fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
            members = [_member(tf, i, opts) for i in tf.getmembers()]
        return [r.key for r in self._records(ref, members, {}, opts)]

    def rewrite(
        self,
        source: bytes,
        replaced: dict[str, tuple[str, bytes]],
        opts: ShardOptions,
        written: set[str] | None = None,
    ) -> bytes:
        written = set() if written is None else written
        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(source), mode="r:") as src:
            infos = src.getmembers()
            members = [_member(src, i, opts) for i in infos]
            drop = set(_bad_samples(members))
            for m in members:
                if m.image and m.name not in replaced:
                    drop.add(sample_key(m.name))
            images = {m.name for m in members if m.image}
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
                for info in infos:
                    if sample_key(info.name) in drop:
                        continue
                    if not info.isfile():  # directories: nothing else survives _bad_samples
                        dst.addfile(copy.copy(info))
                        continue
                    extracted = src.extractfile(info)
                    body = extracted.read() if extracted else b""
                    if info.name in images:
                        body = check_source(info.name, body, replaced)
                        written.add(info.name)
                    new = copy.copy(info)
                    new.size = len(body)
                    dst.addfile(new, io.BytesIO(body))
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
