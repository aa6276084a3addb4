"""Dataset staging (S3 prefix or archive -> local directory) and validation before any GPU time is spent.

Staging trusts nothing in the input: keys and archive members may not escape the dataset directory
(``..``, absolute paths, links pointing out), and the total size and file count are bounded while bytes are
written, not from headers. Before the first GET the dataset's size (the prefix's listing, or the archive's
HEAD) is checked against the scratch space (``Scratch``): a dataset that cannot fit fails in seconds with
``ScratchTooSmall`` naming spec.resources.scratchSize instead of filling the node's disk. Validation reads
every label line and opens every image, so a broken dataset fails in seconds with ``DatasetInvalid`` naming
the file and line instead of hours later inside Ultralytics.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import logging
import lzma
import math
import os
import posixpath
import shutil
import stat
import threading
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from yolo_contract.exitcodes import DatasetInvalid, ScratchTooSmall
from yolo_contract.sizing import DEFAULT_MAX_DATASET_BYTES, DEFAULT_MAX_DATASET_FILES, dataset_limits
from yolo_contract.trainer_config import TrainerConfig

from . import tarstream
from .s3 import S3NotFound, S3Store, parse_s3_uri

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
# Same set Ultralytics accepts (ultralytics.data.utils.IMG_FORMATS), kept here to avoid importing it early.
IMG_FORMATS = frozenset({"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"})
# Standalone runs and tests only: a pod gets its limits in the config (spec.resources.maxDatasetSize/Files).
MAX_BYTES_ENV = "YOLO_TRAINER_MAX_DATASET_BYTES"
MAX_FILES_ENV = "YOLO_TRAINER_MAX_DATASET_FILES"
DEFAULT_MAX_BYTES = DEFAULT_MAX_DATASET_BYTES
DEFAULT_MAX_FILES = DEFAULT_MAX_DATASET_FILES
MAX_BYTES_FIELD = "spec.resources.maxDatasetSize"
MAX_FILES_FIELD = "spec.resources.maxDatasetFiles"
MAX_REPORTED_PROBLEMS = 5
LOCAL_DATA_YAML = "data.trainer.yaml"
SCRATCH_FIELD = "spec.resources.scratchSize"
SCRATCH_CLASS_FIELD = "spec.resources.scratchStorageClassName"
GIB = 1 << 30
# Kept free beside the dataset for the rest of the work directory. An x-size model's last.pt with AdamW state
# (Ultralytics' "auto" choice for short runs) is ~400 MiB, and while it trains last.pt, best.pt, the copy
# staged for upload and the starting (or resumed) weights coexist; exports and plots come on top.
SCRATCH_HEADROOM_BYTES = 2 * GIB


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        return cls(
            int(env.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)), int(env.get(MAX_FILES_ENV, DEFAULT_MAX_FILES))
        )

    @classmethod
    def from_config(cls, cfg: TrainerConfig, environ: dict[str, str] | None = None) -> Limits:
        """The config's limits (explicit, else derived from its scratch size); the environment variables
        still override what the config leaves unset, for standalone runs."""
        env = os.environ if environ is None else environ
        max_bytes = cfg.max_dataset_bytes
        if max_bytes is None and env.get(MAX_BYTES_ENV):
            max_bytes = int(env[MAX_BYTES_ENV])
        max_files = cfg.max_dataset_files
        if max_files is None and env.get(MAX_FILES_ENV):
            max_files = int(env[MAX_FILES_ENV])
        return cls(*dataset_limits(cfg.scratch_bytes, max_bytes, max_files))


@dataclass
class SplitSummary:
    images: int = 0
    labeled: int = 0
    backgrounds: int = 0
    instances: int = 0


@dataclass
class DatasetSummary:
    data_yaml: Path
    nc: int
    names: dict[int, str]
    splits: dict[str, SplitSummary] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nc": self.nc,
            "names": self.names,
            "splits": {k: vars(v) for k, v in self.splits.items()},
        }


# --- scratch space -----------------------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Room:
    """Bytes the dataset may take (negative when not even the headroom is left), and why that much: the free
    space under ``path``, the budget, and ``taken`` bytes (``taken_by``) already set aside on that disk."""

    bytes: int
    path: Path
    free: int
    budget: int | None
    taken: int = 0
    taken_by: str = ""

    def less(self, n: int, by: str) -> Room:
        """What is left once ``n`` more bytes (``by``: an archive kept while it is extracted) are on the disk."""
        return Room(self.bytes - n, self.path, self.free, self.budget, self.taken + n, by)

    def require(self, uri: str, needed: int, what: str) -> None:
        if needed > self.bytes:
            raise self.error(uri, needed, what)

    def error(self, uri: str, needed: int, what: str) -> ScratchTooSmall:
        total = needed + self.taken + SCRATCH_HEADROOM_BYTES
        at_least = f"{math.ceil(total / GIB)}Gi"
        parts = [f"{_size(needed)} for {what}"]
        if self.taken:
            parts.append(f"{_size(self.taken)} for {self.taken_by}")
        parts.append(f"{_size(SCRATCH_HEADROOM_BYTES)} for weights and checkpoints")
        head = f"dataset {uri} needs at least {_size(total)} of scratch space ({', '.join(parts)})"
        if self.budget is not None and self.budget <= self.free:
            tail = f"but {SCRATCH_FIELD} is {_size(self.budget)}; set it to at least {at_least}"
        elif self.budget is None:
            tail = (
                f"but only {_size(self.free)} is free under {self.path}; set {SCRATCH_FIELD} to at least {at_least} "
                f"so that the pod runs where that much disk is free (with {SCRATCH_CLASS_FIELD}: on a volume of "
                "its own)"
            )
        else:
            tail = (
                f"but only {_size(self.free)} is free under {self.path}, less than {SCRATCH_FIELD} "
                f"({_size(self.budget)}): the node's disk is fuller than its allocatable ephemeral storage says; "
                f"free disk on the node, or set {SCRATCH_CLASS_FIELD} for a volume of its own"
            )
        return ScratchTooSmall(f"{head}, {tail}")


@dataclass(frozen=True)
class Scratch:
    """The work directory's space: its volume's size (``TrainerConfig.scratch_bytes``, from
    spec.resources.scratchSize; None when unset) and, always, the filesystem's actual free space. An emptyDir's
    sizeLimit is enforced by eviction, not by the filesystem, so only the budget reveals it."""

    budget: int | None = None
    disk_usage: Callable[[str], Any] = shutil.disk_usage

    def room(self, path: Path) -> Room:
        """The bytes a dataset staged under ``path`` may take: the smaller of the budget and the free space,
        less the headroom the rest of the work directory needs."""
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = int(self.disk_usage(str(probe)).free)
        bound = free if self.budget is None else min(free, self.budget)
        return Room(bound - SCRATCH_HEADROOM_BYTES, path, free, self.budget)


def _archive_size(store: S3Store, bucket: str, key: str, uri: str) -> int | None:
    try:
        return store.size(bucket, key)
    except S3NotFound as e:
        raise DatasetInvalid(f"dataset archive {uri} does not exist: fix spec.dataset") from e


# --- path safety -------------------------------------------------------------------------------------------


def safe_relpath(name: str, source: str = "") -> PurePosixPath:
    """A member/key name as a relative path inside the dataset, or DatasetInvalid (zip-slip, absolute).

    ``source`` (the archive or prefix URI) leads the message, so it names the dataset as well as the entry."""
    where = f"{source}: " if source else ""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise DatasetInvalid(f"{where}archive/prefix entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise DatasetInvalid(f"{where}archive/prefix entry {name!r} escapes the dataset directory ('..')")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


class _Budget:
    """Counts bytes/files as they are written; stops a zip bomb at the limit, not after, and an archive that
    extracts to more than the scratch space (``room``) before it fills the disk."""

    def __init__(self, limits: Limits, source: str, room: Room | None = None):
        self.limits, self.source, self.room = limits, source, room
        self.bytes = self.files = 0
        self._lock = threading.Lock()  # extract_zip's threads count into it

    def add_file(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise DatasetInvalid(
                f"{self.source} has more than {self.limits.max_files} files: raise {MAX_FILES_FIELD} (unset: "
                f"one per 4 KiB of {SCRATCH_FIELD}), or stage fewer, larger files"
            )

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise DatasetInvalid(
                f"{self.source} extracts to more than {self.limits.max_bytes} bytes: raise {MAX_BYTES_FIELD} "
                f"(unset: {SCRATCH_FIELD})"
            )
        if self.room is not None and self.bytes > self.room.bytes:
            raise self.room.error(self.source, self.bytes, "its contents up to where extraction stopped")

    def expect(self, n: int, what: str) -> None:
        """Refuses up front ``n`` bytes an archive's own index announces (a zip's central directory) when they
        cannot fit; the count while writing still holds whatever the index claims."""
        if self.room is not None and n > self.room.bytes:
            raise self.room.error(self.source, n, what)


def _write_file(path: str, chunks: Any, budget: _Budget) -> None:
    """Creates ``path`` with the bytes of ``chunks``, counting them against the budget as they are written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            for chunk in chunks:
                budget.add_bytes(len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise  # the extractors report it as a corrupt archive
        # A full disk is no corrupt archive: not an OSError, so the extractors let it through.
        raise ScratchTooSmall(
            f"{budget.source}: the disk filled up while staging ({e.strerror}) after {_size(budget.bytes)}; "
            f"raise {SCRATCH_FIELD}"
        ) from e


# Files are created and written by this many threads: the work is system calls (the filesystem's file creation,
# the copy into the page cache) that release the GIL (bench/staging.py: 1.18x a bare GET plus GNU tar, was 1.81x).
ZIP_EXTRACT_THREADS = 4


def extract_zip(archive: Path, dest: Path, limits: Limits, source: str, room: Room | None = None,
                threads: int = ZIP_EXTRACT_THREADS) -> None:  # fmt: skip
    """Every entry is checked (names, links, the file count, the announced size) before the first byte is
    written; then the files are extracted by ``threads`` threads, each byte counted against the budget."""
    budget = _Budget(limits, source, room)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetInvalid(f"{source} is not a valid zip archive: {e}") from e
    root = str(dest)
    with zf:
        infos = zf.infolist()
        entries = [i for i in infos if not i.is_dir()]
        budget.expect(sum(i.file_size for i in entries), f"its {len(entries)} files by the zip's central directory")
        dirs: set[str] = {root}
        members: dict[str, zipfile.ZipInfo] = {}  # path -> entry; a name given twice: the last one wins
        for info in infos:
            rel = safe_relpath(info.filename, source)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DatasetInvalid(
                    f"{source}: entry {info.filename!r} is a symlink; links are not allowed in zips"
                )
            path = os.path.join(root, str(rel))
            if info.is_dir() or str(rel) == ".":
                dirs.add(path)
                continue
            budget.add_file()
            dirs.add(os.path.dirname(path))
            members[path] = info
        try:
            for d in sorted(dirs):
                os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise DatasetInvalid(f"{source} is corrupt: {e}") from e

        def copy(item: tuple[str, zipfile.ZipInfo]) -> None:
            path, info = item
            try:
                with zf.open(info) as src:  # zipfile serializes the archive's reads; CRCs are checked
                    _write_file(path, iter(lambda: src.read(1 << 20), b""), budget)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
                raise DatasetInvalid(f"{source} is corrupt at entry {info.filename!r}: {e}") from e

        _run_all(copy, list(members.items()), threads)


def _run_all(fn: Callable[[Any], None], items: list[Any], threads: int) -> None:
    """``fn`` on every item, on ``threads`` threads; the first error stops the others and is raised."""
    if threads <= 1 or len(items) < 2:
        for item in items:
            fn(item)
        return
    it = iter(items)
    failed: list[BaseException] = []

    def work() -> None:
        for item in it:  # next() on a shared iterator is atomic under the GIL
            if failed:
                return
            try:
                fn(item)
            except BaseException as e:  # re-raised in the caller
                failed.append(e)
                return

    with ThreadPoolExecutor(threads, thread_name_prefix="extract") as pool:
        for f in [pool.submit(work) for _ in range(threads)]:
            f.result()
    if failed:
        raise failed[0]


def _buffered(src, bufsize: int = 4 << 20) -> io.BufferedReader:
    """A stream (``readinto``/``read``) read in big buffered reads: the tar headers and small members come
    out of one buffer instead of a read on the connection each."""
    return io.BufferedReader(_RawStream(src), bufsize)


class _RawStream(io.RawIOBase):
    def __init__(self, src):
        self._src = src
        self._into = getattr(src, "readinto", None)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._into is not None:
            n = self._into(b)
        else:
            data = self._src.read(len(b))
            n = len(data)
            b[:n] = data
        return n


def _open_tar_stream(raw) -> Any:
    """The (decompressed) tar bytes of ``raw``: plain, gzip, bzip2 or xz, told apart by their magic bytes."""
    head = raw.peek(6)[:6]
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head[:3] == b"BZh":
        return bz2.BZ2File(raw)
    if head == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)
    return raw


def extract_tar(archive: Path | Any, dest: Path, limits: Limits, source: str, room: Room | None = None) -> None:
    """``archive``: a path, or a stream with ``read(n)`` (read once, front to back, as the bytes arrive).

    ``tarstream`` reads the headers (ustar, pax, GNU long names); the member data is copied straight from one
    4-MiB buffer into files with ``os.write``, the folders made once each (bench/staging.py measures it against
    GNU tar extracting the same archive; writer threads were tried and gained nothing)."""
    budget = _Budget(limits, source, room)
    links: list[tuple[PurePosixPath, tarstream.Member]] = []
    made: set[str] = {str(dest)}
    root = str(dest)
    with contextlib.ExitStack() as stack:
        try:
            if isinstance(archive, Path):
                raw = stack.enter_context(open(archive, "rb", buffering=4 << 20))
            else:
                raw = stack.enter_context(_buffered(archive))
            reader = tarstream.TarReader(_open_tar_stream(raw))
            members = iter(reader)
            m = next(members, None)
        except (tarstream.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise DatasetInvalid(f"{source} is not a valid tar archive: {e}") from e
        try:
            while m is not None:
                rel = safe_relpath(m.name, source)
                if m.kind == tarstream.DIRECTORY:
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                    made.add(os.path.join(root, str(rel)))
                elif m.kind in (tarstream.SYMLINK, tarstream.HARDLINK):
                    links.append((rel, m))
                elif m.kind == tarstream.REGULAR:
                    budget.add_file()
                    path = os.path.join(root, str(rel))
                    parent = os.path.dirname(path)
                    if parent not in made:
                        os.makedirs(parent, exist_ok=True)
                        made.add(parent)
                    _write_file(path, iter(reader.read_data, b""), budget)
                else:
                    raise DatasetInvalid(f"{source}: entry {m.name!r} is a {m.kind}, not a regular file")
                m = next(members, None)
        except (tarstream.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise DatasetInvalid(f"{source} is corrupt: {e}") from e
    # Links last, after every regular file exists, and only when they resolve inside the dataset: so no
    # write can go through a link and no link can expose files outside.
    for rel, m in links:
        target = m.linkname.replace("\\", "/")
        if m.kind == tarstream.SYMLINK:
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(str(rel)), target))
        else:
            resolved = posixpath.normpath(target)
        if target.startswith("/") or resolved.startswith("..") or resolved == "..":
            raise DatasetInvalid(f"{source}: link {m.name!r} -> {m.linkname!r} points outside the dataset")
        src_path = dest / resolved
        if not src_path.is_file() or not is_within(src_path, dest):
            raise DatasetInvalid(
                f"{source}: link {m.name!r} -> {m.linkname!r} does not name a file in the archive"
            )
        budget.add_file()
        budget.add_bytes(src_path.stat().st_size)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_path, dest / rel)  # a copy, not a link: the staged tree has no links at all


def archive_kind(key: str) -> str | None:
    k = key.lower()
    if k.endswith(".zip"):
        return "zip"
    if k.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def find_data_yaml(root: Path) -> Path:
    """data.yaml at the root, or inside the single top-level directory (a zipped folder)."""
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return root / name
    entries = [p for p in root.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        for name in ("data.yaml", "data.yml"):
            if (entries[0] / name).is_file():
                return entries[0] / name
    raise DatasetInvalid(
        f"no data.yaml at the top of the dataset (found: {sorted(p.name for p in entries)[:10]})"
    )


# --- staging -----------------------------------------------------------------------------------------------


def stage_dataset(
    store: S3Store,
    uri: str,
    dest: Path,
    limits: Limits | None = None,
    concurrency: int = 32,
    scratch: Scratch | None = None,
) -> Path:
    """Downloads (and extracts) the dataset into ``dest``; returns the path of its data.yaml.

    Before the first GET its size is checked against ``scratch`` (default: the free space under ``dest``).
    ``concurrency``: GETs in flight for a prefix. With the lean GET client the client's CPU is no longer the
    limit; the server's latency is, and 32 kept up with s5cmd's 256 on a loaded 2-core node where 16 did not."""
    limits = limits or Limits.from_env()
    bucket, key = parse_s3_uri(uri)
    if dest.exists():
        shutil.rmtree(dest)  # a retried pod re-stages from scratch: never mix two versions of a dataset
    dest.mkdir(parents=True)
    room = (scratch or Scratch()).room(dest)
    kind = archive_kind(key)
    size = _archive_size(store, bucket, key, uri) if kind else None
    streamed = kind == "tar"
    if size is not None:
        # Its contents take about the archive's size or more: compression only adds to it, and the header a tar
        # or zip spends per entry is about what rounding each extracted file up to whole disk blocks costs.
        if streamed:
            room.require(uri, size, f"the contents of the {_size(size)} archive, at least")
        else:
            room.require(uri, 2 * size, f"the {_size(size)} archive and at least as much again for its contents")
    if streamed:
        # Extracted while it downloads (no temporary copy of the archive); a broken connection restarts both.
        def consume(stream) -> None:
            if any(dest.iterdir()):
                shutil.rmtree(dest)
                dest.mkdir()
            extract_tar(stream, dest, limits, uri, room)

        try:
            store.stream(bucket, key, consume, max_size=limits.max_bytes)
        except S3NotFound as e:
            raise DatasetInvalid(f"dataset archive {uri} does not exist: fix spec.dataset") from e
    elif kind:
        archive = dest.parent / f".archive-{Path(key).name}"
        try:
            store.download(bucket, key, archive, max_size=limits.max_bytes)
        except S3NotFound as e:
            raise DatasetInvalid(f"dataset archive {uri} does not exist: fix spec.dataset") from e
        try:
            n = archive.stat().st_size
            extract = extract_zip if kind == "zip" else extract_tar
            extract(archive, dest, limits, uri, room.less(n, "the archive while it is extracted"))
        finally:
            archive.unlink(missing_ok=True)
    else:
        prefix = key.rstrip("/") + "/" if key else ""
        objects = [o for o in store.list(bucket, prefix) if not o.key.endswith("/")]
        if not objects:
            raise DatasetInvalid(f"dataset prefix {uri} is empty or does not exist: fix spec.dataset")
        if not any(o.key[len(prefix) :] in ("data.yaml", "data.yml") for o in objects):
            raise DatasetInvalid(f"no data.yaml under {uri} (expected {uri.rstrip('/')}/data.yaml)")
        budget = _Budget(limits, uri)
        items = []
        for o in objects:
            rel = safe_relpath(o.key[len(prefix) :], uri)
            budget.add_file()
            budget.add_bytes(o.size)
            items.append((o.key, dest / rel, o.size))
        room.require(uri, budget.bytes, f"its {len(items)} objects")
        n = store.download_many(bucket, items, concurrency=concurrency)
        log.info("staged %d objects (%d bytes) from %s", len(items), n, uri)
    return find_data_yaml(dest)


# --- validation --------------------------------------------------------------------------------------------


def _names(data: dict, yaml_name: str) -> dict[int, str]:
    names = data.get("names")
    nc = data.get("nc")
    if names is None and nc is None:
        raise DatasetInvalid(f"{yaml_name}: needs 'names' (list or dict) or 'nc'")
    if names is None:
        names = {i: f"class{i}" for i in range(int(nc))}
    elif isinstance(names, list):
        names = dict(enumerate(str(n) for n in names))
    elif isinstance(names, dict):
        try:
            names = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise DatasetInvalid(f"{yaml_name}: 'names' keys must be class ids (integers)") from e
        if sorted(names) != list(range(len(names))):
            raise DatasetInvalid(f"{yaml_name}: 'names' ids must be 0..{len(names) - 1}")
    else:
        raise DatasetInvalid(f"{yaml_name}: 'names' must be a list or a dict")
    if nc is not None and int(nc) != len(names):
        raise DatasetInvalid(f"{yaml_name}: nc={nc} but {len(names)} names")
    if not names:
        raise DatasetInvalid(f"{yaml_name}: no classes")
    return names


def _resolve_split(value: str, base: Path, root: Path, key: str, yaml_name: str) -> Path:
    """A split path from data.yaml, inside the dataset; ``../train/images`` (Roboflow) falls back to base."""
    if os.path.isabs(value):
        raise DatasetInvalid(
            f"{yaml_name}: {key}: absolute path {value!r} is not allowed; use a path relative to data.yaml"
        )
    candidates = [base / value]
    stripped = value
    while stripped.startswith(
        "../"
    ):  # Roboflow writes paths relative to a subfolder; Ultralytics does the same
        stripped = stripped[3:]
        candidates.append(base / stripped)
    for c in candidates:
        if c.exists():
            if not is_within(c, root):
                raise DatasetInvalid(f"{yaml_name}: {key}: {value!r} points outside the dataset")
            return c.resolve()
    if not is_within(candidates[-1], root):
        raise DatasetInvalid(f"{yaml_name}: {key}: {value!r} points outside the dataset")
    raise DatasetInvalid(f"{yaml_name}: {key}: {value!r} does not exist in the dataset")


def _split_images(paths: list[Path], root: Path, key: str) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix[1:].lower() in IMG_FORMATS and q.is_file()))
        elif p.suffix == ".txt":  # a list file, one image path a line (relative to the list's folder)
            for line in p.read_text().splitlines():
                line = line.strip()
                if not line:
                    continue
                q = (p.parent / line) if not os.path.isabs(line) else Path(line)
                if not is_within(q, root):
                    raise DatasetInvalid(f"{p.relative_to(root)}: image {line!r} points outside the dataset")
                out.append(q.resolve())
        elif p.suffix[1:].lower() in IMG_FORMATS:
            out.append(p)
        else:
            raise DatasetInvalid(
                f"split {key}: {p.relative_to(root)} is neither a folder, a .txt list nor an image"
            )
    return out


def label_path(img: Path) -> Path:
    """Ultralytics' rule: the last /images/ becomes /labels/, the suffix .txt."""
    s = str(img)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return Path(s.rsplit(".", 1)[0] + ".txt")


def parse_label_line(line: str, nc: int) -> str | None:
    """None if the line is a valid YOLO box (``cls x y w h``) or polygon (``cls x1 y1 ...``), else why."""
    parts = line.split()
    if len(parts) != 5 and not (len(parts) >= 7 and len(parts) % 2 == 1):
        return f"expected 5 numbers (class x_center y_center width height), got {len(parts)}"
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return f"not a number in {line.strip()!r}"
    cls = values[0]
    if not math.isfinite(cls) or not cls.is_integer():
        return f"class id {parts[0]!r} is not an integer"
    if cls < 0 or cls >= nc:
        return f"class id {int(cls)} out of range (nc={nc}, valid ids 0..{nc - 1})"
    for v in values[1:]:
        if not math.isfinite(v):
            return f"coordinate {v} is not finite"
        if v < 0 or v > 1:
            return f"coordinate {v:g} outside [0, 1] (coordinates must be normalized)"
    return None


def check_label_file(path: Path, nc: int, root: Path) -> tuple[int, list[str]]:
    problems: list[str] = []
    n = 0
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        return 0, [f"{path.relative_to(root)}: unreadable: {e}"]
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        why = parse_label_line(line, nc)
        if why:
            problems.append(f"{path.relative_to(root)}:{i}: {why}")
        else:
            n += 1
    return n, problems


def _jpeg_complete(path: Path) -> bool:
    """A JPEG ends with the EOI marker; one cut short (an interrupted upload) does not."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 2:
            return False
        f.seek(-2, os.SEEK_END)
        return f.read() == b"\xff\xd9"


def check_image(path: Path, root: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            fmt = (im.format or "").upper()
            im.verify()
        # verify() reads only the headers of a JPEG, so a truncated one passes it (Ultralytics would later drop
        # it with a warning). Only JPEGs without EOI are decoded in full: that keeps validation cheap.
        if fmt in ("JPEG", "MPO") and not _jpeg_complete(path):
            with Image.open(path) as im:
                im.load()
        return None
    except Exception as e:  # PIL raises many types for corrupt files
        return f"{path.relative_to(root)}: unreadable image: {e}"


def check_split_overlap(train: list[Path], val: list[Path], root: Path, yaml_name: str) -> None:
    """The same image in train and val is an error; the same file name with other bytes only a warning.

    A validation image that is also trained on makes mAP, and so best.pt, measure memorisation: the run would
    "succeed" with results that are silently wrong. Equal names alone prove nothing (many exports number each
    split from 0001.jpg), so they are compared byte for byte; only name collisions are compared, not every pair.
    """
    import filecmp

    by_name: dict[str, Path] = {}
    for p in train:
        by_name.setdefault(p.name, p)
    same, differ = [], []
    for v in val:
        t = by_name.get(v.name)
        if t is None:
            continue
        if t.resolve() == v.resolve() or filecmp.cmp(t, v, shallow=False):
            same.append((t, v))
        else:
            differ.append((t, v))
    if differ:
        t, v = differ[0]
        log.warning(
            "%s: %d val image(s) share a file name with a train image but differ in content (e.g. %s and %s)",
            yaml_name,
            len(differ),
            t.relative_to(root),
            v.relative_to(root),
        )
    if same:
        t, v = same[0]
        if t.resolve() == v.resolve():
            what = f"{v.relative_to(root)} is listed in both"
        else:
            what = f"{v.relative_to(root)} is identical to {t.relative_to(root)}"
        raise DatasetInvalid(
            f"{yaml_name}: {len(same)} val image(s) are also train images ({what}): validation would score "
            "images the model was trained on; remove them from one of the splits"
        )


def validate_dataset(data_yaml: Path, threads: int = 8) -> DatasetSummary:
    """Checks data.yaml, splits, every label and image; writes ``data.trainer.yaml`` (absolute paths)."""
    root = data_yaml.parent.resolve()
    yname = data_yaml.name
    try:
        data = yaml.safe_load(data_yaml.read_text())
    except yaml.YAMLError as e:
        raise DatasetInvalid(f"{yname} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise DatasetInvalid(f"{yname} must be a mapping with train/val/names")
    names = _names(data, yname)
    nc = len(names)

    base = root
    if data.get("path"):
        p = str(data["path"])
        cand = root / p
        if not os.path.isabs(p) and cand.is_dir() and is_within(cand, root):
            base = cand.resolve()
        else:  # a path from the author's machine: the staged copy's own folder is the dataset root
            log.warning("%s: ignoring path %r; split paths are taken relative to data.yaml", yname, p)

    if "val" not in data and "validation" in data:
        data["val"] = data["validation"]
    splits: dict[str, list[Path]] = {}
    for key in ("train", "val", "test"):
        value = data.get(key)
        if value in (None, ""):
            if key == "test":
                continue
            raise DatasetInvalid(f"{yname}: the {key!r} split is missing")
        values = value if isinstance(value, list) else [value]
        try:
            paths = [_resolve_split(str(v), base, root, key, yname) for v in values]
        except DatasetInvalid as e:
            # Training never reads the test split; Roboflow lists ../test/images even when it exported none.
            if key == "test" and "does not exist" in str(e):
                log.warning("%s; ignoring the optional test split", e)
                continue
            raise
        splits[key] = paths

    summary = DatasetSummary(data_yaml=root / LOCAL_DATA_YAML, nc=nc, names=names)
    problems: list[str] = []
    split_images: dict[str, list[Path]] = {}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for key, paths in splits.items():
            images = split_images[key] = _split_images(paths, root, key)
            if not images and key in ("train", "val"):
                raise DatasetInvalid(f"{yname}: the {key!r} split ({data[key]}) has no images")
            s = SplitSummary(images=len(images))
            labels = [label_path(i) for i in images]
            existing = [lp for lp in labels if lp.is_file()]
            for n, probs in pool.map(lambda lp: check_label_file(lp, nc, root), existing):
                s.instances += n
                s.labeled += 1 if n else 0
                problems.extend(probs)
            s.backgrounds = s.images - s.labeled
            problems.extend(p for p in pool.map(lambda i: check_image(i, root), images) if p)
            summary.splits[key] = s
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        for p in problems[:MAX_REPORTED_PROBLEMS]:
            log.error("dataset: %s", p)
        raise DatasetInvalid(f"{problems[0]}{more}")
    check_split_overlap(split_images["train"], split_images["val"], root, yname)
    if summary.splits["train"].instances == 0:
        raise DatasetInvalid(f"{yname}: the 'train' split has no labeled objects")

    local = {
        "path": str(root),
        **{k: [str(p) for p in v] if len(v) > 1 else str(v[0]) for k, v in splits.items()},
        "nc": nc,
        "names": names,
    }
    summary.data_yaml.write_text(yaml.safe_dump(local, sort_keys=False))
    return summary
