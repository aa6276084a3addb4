"""The headers of a tar stream, read front to back: ustar, pax ('x'/'g' records) and GNU long names ('L'/'K').

Hand-written instead of tarfile: tarfile spends about 110 µs per member on its header objects (a pax header
per member, as tarfile itself writes archives, parses twice), which made streaming a 4,001-file archive 1.6x
a bare GET plus GNU tar (bench/staging.py); this reads the few fields staging needs in a few µs. It is checked
against tarfile, on archives of every format tarfile and GNU tar write, in tests/unit/test_trainer_tarstream.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 512
# A pax or GNU long-name header bigger than this is no dataset's: refused instead of held in memory.
MAX_META_BYTES = 1 << 20

REGULAR, DIRECTORY, SYMLINK, HARDLINK = "file", "dir", "symlink", "hardlink"
_KINDS = {b"0": REGULAR, b"\0": REGULAR, b"7": REGULAR, b"5": DIRECTORY, b"2": SYMLINK, b"1": HARDLINK}
_DESCRIBED = {b"3": "character device", b"4": "block device", b"6": "fifo", b"S": "sparse file"}


class TarError(Exception):
    """The stream is no tar archive, or a corrupt one."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    kind: str  # REGULAR, DIRECTORY, SYMLINK, HARDLINK, or a description of what else it is
    size: int  # the data bytes that follow the header (regular files only; 0 for the others)
    linkname: str


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256, for sizes of 8 GiB and more
        n = int.from_bytes(field[1:], "big")
        return n - (1 << (8 * (len(field) - 1))) if field[:1] == b"\xff" else n
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        raise TarError(f"invalid number field {field!r}") from None


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156])
    except TarError:
        return False
    rest = block[:148] + b" " * 8 + block[156:]
    return stored == sum(rest) or stored == sum(b - 256 if b > 127 else b for b in rest)  # signed, as old tars


def _pax_records(data: bytes) -> dict[str, str]:
    """``"%d %s=%s\\n"`` records, each led by its own length."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarError("invalid pax header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarError("invalid pax header")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class TarReader:
    """``for m in reader:`` yields each member; a regular file's data is read with ``read_data`` (or skipped when
    it is not), before the next member. ``stream``: ``read(n)``, front to back."""

    def __init__(self, stream) -> None:
        self._read = stream.read
        self._left = 0  # data bytes of the current member not read yet
        self._pad = 0

    def _exact(self, n: int) -> bytes:
        buf = self._read(n)
        while len(buf) < n:
            more = self._read(n - len(buf))
            if not more:
                raise TarError(f"unexpected end of data ({len(buf)} of {n} bytes)")
            buf += more
        return buf

    def read_data(self, n: int = 1 << 20) -> bytes:
        """The current member's next data bytes (at most ``n``); b"" once it is all read."""
        n = min(n, self._left)
        if not n:
            return b""
        chunk = self._read(n)
        if not chunk:
            raise TarError("unexpected end of data")
        self._left -= len(chunk)
        return chunk

    def _skip_rest(self) -> None:
        while self._left:
            self.read_data()
        if self._pad:
            self._exact(self._pad)
            self._pad = 0

    def _data(self, size: int) -> bytes:
        if size > MAX_META_BYTES:
            raise TarError(f"a {size}-byte extended header")
        return self._exact(size + -size % BLOCK)[:size]

    def __iter__(self) -> Iterator[Member]:
        pax_global: dict[str, str] = {}
        pax: dict[str, str] = {}
        long_name = long_link = None
        first = True
        while True:
            self._skip_rest()
            block = self._read(BLOCK)
            if first and not block:
                raise TarError("empty file")
            if len(block) < BLOCK or block.count(0) == BLOCK:  # end of archive (or no end blocks at all)
                if len(block) not in (0, BLOCK):
                    raise TarError("truncated header")
                if pax or long_name is not None or long_link is not None:
                    raise TarError("an extended header without its member")
                return
            if not _checksum_ok(block):
                raise TarError("bad checksum" if not first else "not a tar archive (bad header checksum)")
            first = False
            typ = block[156:157]
            size = _number(block[124:136])
            if size < 0:
                raise TarError("negative size")
            if typ in (b"x", b"g", b"X"):  # pax: for the next member, or for all that follow
                records = _pax_records(self._data(size))
                if any(k.startswith("GNU.sparse.") for k in records):
                    raise TarError("GNU sparse files are not supported")
                (pax_global if typ == b"g" else pax).update(records)
                continue
            if typ in (b"L", b"K"):
                value = _text(self._data(size))
                if typ == b"L":
                    long_name = value
                else:
                    long_link = value
                continue
            fields = {**pax_global, **pax}
            name = _text(block[0:100])
            prefix = _text(block[345:500])
            if prefix and block[257:263] == b"ustar\0":  # POSIX ustar: the name's leading folders
                name = f"{prefix}/{name}"
            name = fields.get("path", long_name if long_name is not None else name)
            linkname = fields.get("linkpath", long_link if long_link is not None else _text(block[157:257]))
            if "size" in fields:
                try:
                    size = int(fields["size"])
                except ValueError:
                    raise TarError(f"invalid pax size {fields['size']!r}") from None
            pax, long_name, long_link = {}, None, None
            kind = _KINDS.get(typ) or _DESCRIBED.get(typ) or f"entry of type {typ!r}"
            if kind == REGULAR and name.endswith("/") and typ == b"\0":
                kind = DIRECTORY  # old V7 tars: a directory is a regular file whose name ends with a slash
            if kind == DIRECTORY:
                name = name.rstrip("/") or name
            # Only regular files' data follows in the stream; others' size fields (links, folders) hold nothing
            # worth reading, except for types this reader does not know, whose data is skipped.
            carries_data = kind == REGULAR or typ not in _KINDS
            self._left = size if carries_data else 0
            self._pad = -self._left % BLOCK
            yield Member(name, kind, size if kind == REGULAR else 0, linkname)
