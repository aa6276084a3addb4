"""tarstream reads what tarfile reads: the same members, names, kinds, sizes, link targets and data, on archives
of every format tarfile writes and on GNU tar's own; and it refuses what is no tar archive."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile

import pytest
from yolo_trainer import tarstream

pytestmark = pytest.mark.unit

NAMES = [
    "data.yaml",
    "train/images/a.jpg",
    "train/labels/ümlaut-標識.txt",  # non-ASCII: pax in PAX_FORMAT, raw UTF-8 bytes in the others
    "deep/" + "/".join(["folder-" + "x" * 20] * 6) + "/long.txt",  # > 100 characters: prefix, pax or GNU 'L'
    "z" * 150 + ".txt",  # a last component > 100 characters: no ustar prefix can hold it
]


def _kind(info: tarfile.TarInfo) -> str:
    if info.isdir():
        return tarstream.DIRECTORY
    if info.issym():
        return tarstream.SYMLINK
    if info.islnk():
        return tarstream.HARDLINK
    return tarstream.REGULAR if info.isfile() else "other"


def _by_tarfile(data: bytes) -> list[tuple[str, str, int, str, bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for info in tf:
            body = tf.extractfile(info).read() if info.isfile() else b""
            out.append((info.name, _kind(info), info.size if info.isfile() else 0, info.linkname, body))
    return out


def _by_tarstream(data: bytes, read_every_other: bool = False) -> list[tuple[str, str, int, str, bytes]]:
    out = []
    reader = tarstream.TarReader(io.BytesIO(data))
    for i, m in enumerate(reader):
        # a member whose data is not read is skipped by the reader itself
        body = b"".join(iter(lambda: reader.read_data(7), b"")) if not read_every_other or i % 2 else None
        out.append((m.name, m.kind, m.size, m.linkname, body))
    return out


def _archive(fmt: int, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for i, name in enumerate(names):
            if fmt == tarfile.USTAR_FORMAT and (len(name.split("/")[-1]) > 100 or not name.isascii()):
                continue  # not representable in ustar
            data = (name * (i + 1)).encode()[: 1000 * i + 3]
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000.5  # a float mtime: tarfile writes a pax header
            tf.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("train/empty-dir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for typ, link in ((tarfile.SYMTYPE, "../data.yaml"), (tarfile.LNKTYPE, "data.yaml")):
            li = tarfile.TarInfo(f"links/{typ.decode()}-" + "l" * 120 * (fmt != tarfile.USTAR_FORMAT))
            li.type, li.linkname = typ, link if fmt == tarfile.USTAR_FORMAT else "t/" * 60 + link  # GNU 'K', pax
            tf.addfile(li)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("skip", [False, True])
def test_the_members_are_tarfiles(fmt, skip):
    data = _archive(fmt, NAMES)
    want = _by_tarfile(data)
    got = _by_tarstream(data, read_every_other=skip)
    assert len(got) == len(want) >= 6
    for g, w in zip(got, want, strict=True):
        assert g[:4] == w[:4]
        assert g[4] is None or g[4] == w[4]


def test_a_pax_global_header_and_long_link_targets():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "g"}) as tf:
        li = tarfile.TarInfo("a-link")
        li.type, li.linkname = tarfile.SYMTYPE, "t/" * 80 + "target.txt"
        tf.addfile(li)
    assert _by_tarstream(buf.getvalue()) == [(n, k, s, ln, b"") for n, k, s, ln, _ in _by_tarfile(buf.getvalue())]


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")
@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar", "v7"])
def test_gnu_tars_archives(tmp_path, fmt):
    src = tmp_path / "src"
    for name in ("data.yaml", "train/images/a.jpg", "train/labels/" + "n" * 75 + ".txt", "folder/"):
        p = src / name
        if name.endswith("/"):
            p.mkdir(parents=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(name.encode() * 300)
    (src / "rel").symlink_to("data.yaml")
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", f"--format={fmt}", "-cf", str(archive), "-C", str(src), "."], check=True)
    data = archive.read_bytes()
    want = _by_tarfile(data)
    assert _by_tarstream(data) == want
    assert {n for n, *_ in want} >= {"./data.yaml", "./rel", "./folder"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"PK\x03\x04" + b"\0" * 1020, "not a tar archive"),
        (b"x" * 700, "not a tar archive"),
    ],
)
def test_what_is_no_tar_is_refused(data, message):
    with pytest.raises(tarstream.TarError, match=message):
        list(tarstream.TarReader(io.BytesIO(data)))


def test_a_truncated_member_and_a_corrupt_header_are_refused():
    data = _archive(tarfile.GNU_FORMAT, NAMES)
    with pytest.raises(tarstream.TarError, match="unexpected end"):
        _by_tarstream(data[:2000])
    bad = bytearray(data)
    second = 512 + ((len(_by_tarfile(data)[0][4]) + 511) // 512) * 512  # the second member's header
    bad[second + 10] ^= 0xFF
    with pytest.raises(tarstream.TarError, match="bad checksum"):
        _by_tarstream(bytes(bad))


def test_an_oversized_extended_header_is_refused():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"comment": "c" * (tarstream.MAX_META_BYTES + 10)}
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(tarstream.TarError, match="extended header"):
        list(tarstream.TarReader(io.BytesIO(buf.getvalue())))


def test_base256_sizes():
    assert tarstream._number(b"\x80" + (1 << 40).to_bytes(11, "big")) == 1 << 40
    assert tarstream._number(b"0000644\0") == 0o644
    assert tarstream._number(b"       \0") == 0
