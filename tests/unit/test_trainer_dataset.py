"""Dataset staging safety (zip-slip, links, bombs) and validation, on local files only."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from yolo_contract.exitcodes import DatasetInvalid, ExitCode, ScratchTooSmall
from yolo_trainer.dataset import (
    MAX_FILES_ENV,
    SCRATCH_HEADROOM_BYTES,
    Limits,
    Scratch,
    extract_tar,
    extract_zip,
    find_data_yaml,
    label_path,
    parse_label_line,
    safe_relpath,
    stage_dataset,
    validate_dataset,
)
from yolo_trainer.s3 import S3NotFound, S3Object
from yolo_trainer.testing import write_roboflow_dataset, write_yolo_dataset, zip_dir

pytestmark = pytest.mark.unit
BIG = Limits(max_bytes=1 << 30, max_files=100_000)
BIG_STAGING = Limits(max_bytes=1 << 40, max_files=100_000)


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "C:/x.txt", "a\\..\\..\\x"]
)
def test_safe_relpath_rejects_escapes(name):
    with pytest.raises(DatasetInvalid):
        safe_relpath(name)


def test_safe_relpath_normalizes_harmless_names():
    assert str(safe_relpath("./train//images/a.jpg")) == "train/images/a.jpg"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("0 0.5 0.5 0.2 0.2", None),
        ("1 0.1 0.1 0.2 0.1 0.3 0.4", None),  # polygon (segment) labels are valid for detection too
        ("2 0.5 0.5 0.2 0.2", "class id 2 out of range"),
        ("-1 0.5 0.5 0.2 0.2", "class id -1 out of range"),
        ("0.5 0.5 0.5 0.2 0.2", "not an integer"),
        ("0 0.5 0.5 0.2", "expected 5 numbers"),
        ("0 0.5 0.5 0.2 0.2 0.1", "expected 5 numbers"),
        ("0 0.5 abc 0.2 0.2", "not a number"),
        ("0 0.5 nan 0.2 0.2", "not finite"),
        ("0 0.5 inf 0.2 0.2", "not finite"),
        ("0 120 80 20 20", "outside [0, 1]"),
        ("0 0.5 -0.1 0.2 0.2", "outside [0, 1]"),
    ],
)
def test_parse_label_line(line, why):
    got = parse_label_line(line, nc=2)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got


def test_label_path_follows_ultralytics_rule():
    assert label_path(Path("/d/train/images/x.1.jpg")) == Path("/d/train/labels/x.1.txt")
    assert label_path(Path("/d/images/val/a.png")) == Path("/d/labels/val/a.txt")


def _zip(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo("link")
            info.external_attr = 0o120777 << 16
            zf.writestr(info, symlink)
    return path


def test_zip_slip_is_rejected_and_nothing_escapes(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"data.yaml": b"x", "../../escaped.txt": b"evil"})
    dest = tmp_path / "out" / "ds"
    dest.mkdir(parents=True)
    with pytest.raises(DatasetInvalid, match=r"escapes"):
        extract_zip(archive, dest, BIG, "s3://b/a.zip")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "escaped.txt").exists()


def test_zip_absolute_path_and_symlink_rejected(tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    with pytest.raises(DatasetInvalid, match=r"absolute"):
        extract_zip(_zip(tmp_path / "a.zip", {"/etc/x": b"1"}), dest, BIG, "a.zip")
    with pytest.raises(DatasetInvalid, match=r"symlink"):
        extract_zip(_zip(tmp_path / "b.zip", {"data.yaml": b"1"}, symlink="/etc/passwd"), dest, BIG, "b.zip")


def test_zip_bomb_is_stopped_at_the_limit_not_after(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * (8 << 20))  # 8 MiB of zeros compresses to ~8 KiB
    assert archive.stat().st_size < 100_000
    dest = tmp_path / "ds"
    dest.mkdir()
    with pytest.raises(DatasetInvalid, match=r"more than 1048576 bytes"):
        extract_zip(archive, dest, Limits(max_bytes=1 << 20, max_files=10), "bomb.zip")
    assert (dest / "big.bin").stat().st_size <= (1 << 20) + (1 << 20)  # stopped within one chunk


def test_file_count_limit(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(20)})
    dest = tmp_path / "ds"
    dest.mkdir()
    with pytest.raises(DatasetInvalid, match=r"more than 10 files: raise spec.resources.maxDatasetFiles"):
        extract_zip(archive, dest, Limits(max_bytes=1 << 20, max_files=10), "many.zip")


def test_limits_come_from_the_config_derived_from_its_scratch_size():
    from yolo_contract.trainer_config import TrainerConfig

    cfg = TrainerConfig(name="a", model="yolov8n.pt", dataset="s3://b/d/", output="s3://b/o/")
    assert Limits.from_config(cfg, {}) == Limits(100 << 30, 5_000_000)  # no scratch size: the defaults
    sized = cfg.model_copy(update={"scratch_bytes": 8 << 30})
    assert Limits.from_config(sized, {}) == Limits(8 << 30, (8 << 30) // 4096)
    explicit = sized.model_copy(update={"max_dataset_bytes": 1 << 20, "max_dataset_files": 7})
    assert Limits.from_config(explicit, {MAX_FILES_ENV: "3"}) == Limits(1 << 20, 7)  # the config wins
    assert Limits.from_config(sized, {MAX_FILES_ENV: "3"}) == Limits(8 << 30, 3)  # standalone runs' override


def test_corrupt_zip_is_dataset_invalid(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    dest = tmp_path / "ds"
    dest.mkdir()
    with pytest.raises(DatasetInvalid, match=r"not a valid zip"):
        extract_zip(bad, dest, BIG, "s3://b/bad.zip")


def test_truncated_zip_is_dataset_invalid(tmp_path):
    src = tmp_path / "src"
    write_yolo_dataset(src, n_train=2, n_val=1)
    good = zip_dir(src, tmp_path / "good.zip")
    bad = tmp_path / "trunc.zip"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    dest = tmp_path / "ds"
    dest.mkdir()
    with pytest.raises(DatasetInvalid):
        extract_zip(bad, dest, BIG, "trunc.zip")


def _tar(path: Path, build) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        build(tf)
    return path


def _add(tf: tarfile.TarFile, name: str, data: bytes = b"", link: str | None = None, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    if link is not None:
        info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "./../a/../../x"])
def test_tar_symlink_pointing_out_is_rejected(tmp_path, target):
    archive = _tar(
        tmp_path / "a.tar.gz",
        lambda tf: (_add(tf, "data.yaml", b"x"), _add(tf, "sub/link", link=target, kind=tarfile.SYMTYPE)),
    )
    dest = tmp_path / "ds"
    dest.mkdir()
    with pytest.raises(DatasetInvalid, match=r"outside"):
        extract_tar(archive, dest, BIG, "a.tar.gz")
    assert not (dest / "sub" / "link").exists()


def test_tar_symlink_inside_becomes_a_copy(tmp_path):
    archive = _tar(
        tmp_path / "a.tar.gz",
        lambda tf: (
            _add(tf, "a/real.txt", b"hello"),
            _add(tf, "b/alias.txt", link="../a/real.txt", kind=tarfile.SYMTYPE),
        ),
    )
    dest = tmp_path / "ds"
    dest.mkdir()
    extract_tar(archive, dest, BIG, "a.tar.gz")
    alias = dest / "b" / "alias.txt"
    assert alias.read_text() == "hello" and not alias.is_symlink()


def test_tar_device_and_corrupt(tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    archive = _tar(tmp_path / "dev.tar.gz", lambda tf: _add(tf, "dev", kind=tarfile.CHRTYPE))
    with pytest.raises(DatasetInvalid, match=r"device"):
        extract_tar(archive, dest, BIG, "dev.tar.gz")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetInvalid):
        extract_tar(bad, dest, BIG, "bad.tar.gz")


def test_find_data_yaml_in_single_top_folder(tmp_path):
    (tmp_path / "export" / "train").mkdir(parents=True)
    (tmp_path / "export" / "data.yaml").write_text("x: 1")
    assert find_data_yaml(tmp_path) == tmp_path / "export" / "data.yaml"
    with pytest.raises(DatasetInvalid, match=r"no data.yaml"):
        find_data_yaml(tmp_path / "export" / "train")


def test_validate_yolo_layout_counts_and_rewrites_absolute_paths(tmp_path):
    data_yaml = write_yolo_dataset(tmp_path / "ds", n_train=6, n_val=3)
    s = validate_dataset(data_yaml)
    assert s.nc == 2 and s.names == {0: "red", 1: "green"}
    assert s.splits["train"].images == 6 and s.splits["val"].images == 3 and "test" not in s.splits
    assert s.splits["train"].instances >= 6
    local = yaml.safe_load(s.data_yaml.read_text())
    assert (
        Path(local["train"]).is_absolute()
        and Path(local["train"]) == (tmp_path / "ds/images/train").resolve()
    )


def test_validate_roboflow_relative_parent_paths(tmp_path):
    data_yaml = write_roboflow_dataset(tmp_path / "rf", n_train=4, n_val=2, n_test=2)
    s = validate_dataset(data_yaml)
    assert {k: v.images for k, v in s.splits.items()} == {"train": 4, "val": 2, "test": 2}
    local = yaml.safe_load(s.data_yaml.read_text())
    assert local["val"] == str((tmp_path / "rf/valid/images").resolve())


def test_class_id_out_of_range_names_file_and_line(tmp_path):
    data_yaml = write_yolo_dataset(tmp_path / "ds", n_train=4, n_val=2)
    lbl = tmp_path / "ds/labels/train/train_0002.txt"
    lbl.write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(
        DatasetInvalid, match=r"labels/train/train_0002.txt:2: class id 5 out of range \(nc=2"
    ):
        validate_dataset(data_yaml)


def test_empty_val_split(tmp_path):
    data_yaml = write_yolo_dataset(tmp_path / "ds", n_train=4, n_val=2)
    for p in (tmp_path / "ds/images/val").iterdir():
        p.unlink()
    with pytest.raises(DatasetInvalid, match=r"'val' split .* has no images"):
        validate_dataset(data_yaml)


def test_missing_split_key_and_escaping_path(tmp_path):
    data_yaml = write_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1)
    data = yaml.safe_load(data_yaml.read_text())
    del data["val"]
    data_yaml.write_text(yaml.safe_dump(data))
    with pytest.raises(DatasetInvalid, match=r"'val' split is missing"):
        validate_dataset(data_yaml)
    (tmp_path / "outside" / "images").mkdir(parents=True)
    data["val"] = "../outside/images"
    data_yaml.write_text(yaml.safe_dump(data))
    with pytest.raises(DatasetInvalid, match=r"outside the dataset"):
        validate_dataset(data_yaml)
    data["val"] = "/etc"
    data_yaml.write_text(yaml.safe_dump(data))
    with pytest.raises(DatasetInvalid, match=r"absolute path"):
        validate_dataset(data_yaml)


def test_corrupt_image_is_named(tmp_path):
    data_yaml = write_yolo_dataset(tmp_path / "ds", n_train=3, n_val=2)
    (tmp_path / "ds/images/val/val_0001.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DatasetInvalid, match=r"images/val/val_0001.jpg: unreadable image"):
        validate_dataset(data_yaml)


def test_names_nc_mismatch_and_dict_names(tmp_path):
    data_yaml = write_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1)
    data = yaml.safe_load(data_yaml.read_text())
    data["nc"] = 3
    data_yaml.write_text(yaml.safe_dump(data))
    with pytest.raises(DatasetInvalid, match=r"nc=3 but 2 names"):
        validate_dataset(data_yaml)
    data.pop("nc")
    data["names"] = {0: "a", 1: "b"}
    data_yaml.write_text(yaml.safe_dump(data))
    assert validate_dataset(data_yaml).names == {0: "a", 1: "b"}


def test_background_images_are_counted_not_rejected(tmp_path):
    data_yaml = write_yolo_dataset(tmp_path / "ds", n_train=4, n_val=2)
    os.remove(tmp_path / "ds/labels/train/train_0000.txt")
    (tmp_path / "ds/labels/train/train_0001.txt").write_text("")
    s = validate_dataset(data_yaml)
    assert s.splits["train"].backgrounds == 2 and s.splits["train"].labeled == 2


def test_listed_but_missing_test_split_is_ignored(tmp_path):
    data_yaml = write_roboflow_dataset(tmp_path / "rf", n_train=2, n_val=1, n_test=0)
    (tmp_path / "rf/test/images").rmdir()
    s = validate_dataset(data_yaml)
    assert "test" not in s.splits and "test" not in yaml.safe_load(s.data_yaml.read_text())


# --- scratch space: the dataset must fit before the first GET ------------------------------------------------

GIB = 1 << 30


class Usage:
    """A fake shutil.disk_usage: ``free`` bytes free, and the paths it was asked about."""

    def __init__(self, free: int):
        self.free, self.paths = free, []

    def __call__(self, path):
        self.paths.append(path)
        return shutil._ntuple_diskusage(self.free + GIB, GIB, self.free)


class ListingStore:
    """A fake S3Store: a listing, HEAD sizes and local files, recording every call."""

    getter = None  # archives are downloaded, then extracted

    def __init__(self, objects: dict[str, int] | None = None, archives: dict[str, Path] | None = None):
        self.objects, self.archives = objects or {}, archives or {}
        self.calls: list[tuple[str, str]] = []

    def list(self, bucket, prefix):
        self.calls.append(("list", prefix))
        return [S3Object(k, n) for k, n in sorted(self.objects.items()) if k.startswith(prefix)]

    def size(self, bucket, key):
        self.calls.append(("head", key))
        if key not in self.archives:
            raise S3NotFound(f"s3://{bucket}/{key} does not exist")
        return self.archives[key].stat().st_size

    def download(self, bucket, key, dest, max_size=None, **kw):
        self.calls.append(("get", key))
        shutil.copyfile(self.archives[key], dest)
        return dest.stat().st_size

    def download_many(self, bucket, items, concurrency=16):
        for key, dest, size in items:
            self.calls.append(("get", key))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(b"\0" * size)
        return sum(size for _, _, size in items)

    def gets(self) -> list[str]:
        return [k for op, k in self.calls if op == "get"]


def _prefix(total: int) -> dict[str, int]:
    return {"ds/data.yaml": 10, "ds/images/a.jpg": total - 10}


def test_scratch_room_is_the_smaller_of_budget_and_free_space_less_the_headroom(tmp_path):
    usage = Usage(free=50 * GIB)
    room = Scratch(budget=20 * GIB, disk_usage=usage).room(tmp_path / "not" / "yet" / "there")
    assert room.bytes == 20 * GIB - SCRATCH_HEADROOM_BYTES
    assert usage.paths == [str(tmp_path)]  # the nearest directory that exists
    assert Scratch(budget=None, disk_usage=Usage(8 * GIB)).room(tmp_path).bytes == 6 * GIB
    assert Scratch(budget=20 * GIB, disk_usage=Usage(8 * GIB)).room(tmp_path).bytes == 6 * GIB


def test_prefix_too_large_for_the_budget_fails_before_any_get(tmp_path):
    store = ListingStore(_prefix(10 * GIB))
    scratch = Scratch(budget=8 * GIB, disk_usage=Usage(500 * GIB))
    with pytest.raises(ScratchTooSmall) as err:
        stage_dataset(store, "s3://b/ds/", tmp_path / "dataset", BIG_STAGING, scratch=scratch)
    assert store.gets() == []
    msg = str(err.value)
    assert msg.startswith("dataset s3://b/ds/ needs at least 12.0 GiB of scratch space (10.0 GiB for its 2 objects, ")
    assert "spec.resources.scratchSize is 8.0 GiB; set it to at least 12Gi" in msg
    assert ScratchTooSmall("x").code == ExitCode.SCRATCH_TOO_SMALL


def test_prefix_that_fits_is_staged(tmp_path):
    store = ListingStore(_prefix(1000))
    scratch = Scratch(budget=3 * GIB, disk_usage=Usage(500 * GIB))
    stage_dataset(store, "s3://b/ds/", tmp_path / "dataset", BIG_STAGING, scratch=scratch)
    assert sorted(store.gets()) == ["ds/data.yaml", "ds/images/a.jpg"]


def test_without_a_budget_the_free_disk_bounds_it_and_the_message_names_the_field(tmp_path):
    store = ListingStore(_prefix(10 * GIB))
    with pytest.raises(ScratchTooSmall) as err:
        stage_dataset(store, "s3://b/ds/", tmp_path / "d", BIG_STAGING, scratch=Scratch(None, Usage(4 * GIB)))
    msg = str(err.value)
    assert f"only 4.0 GiB is free under {tmp_path / 'd'}" in msg
    assert "set spec.resources.scratchSize to at least 12Gi" in msg and "scratchStorageClassName" in msg
    assert store.gets() == []


def test_a_node_fuller_than_the_budget_promises_is_named(tmp_path):
    store = ListingStore(_prefix(10 * GIB))
    with pytest.raises(ScratchTooSmall, match=r"less than spec.resources.scratchSize \(50.0 GiB\): the node's disk"):
        stage_dataset(store, "s3://b/ds/", tmp_path / "d", BIG_STAGING, scratch=Scratch(50 * GIB, Usage(4 * GIB)))


def test_downloaded_archive_counts_twice_and_is_checked_by_its_head(tmp_path):
    archive = _zip(tmp_path / "d.zip", {"data.yaml": os.urandom(4000)})
    size = archive.stat().st_size
    store = ListingStore(archives={"d.zip": archive})
    # room for the archive once, not for it and its contents
    scratch = Scratch(budget=SCRATCH_HEADROOM_BYTES + size + size // 2, disk_usage=Usage(500 * GIB))
    with pytest.raises(ScratchTooSmall, match=r"archive and at least as much again for its contents"):
        stage_dataset(store, "s3://b/d.zip", tmp_path / "dataset", BIG_STAGING, scratch=scratch)
    assert store.calls == [("head", "d.zip")]
    with pytest.raises(DatasetInvalid, match="does not exist"):
        stage_dataset(store, "s3://b/gone.zip", tmp_path / "dataset", BIG_STAGING, scratch=scratch)
    roomy = Scratch(budget=SCRATCH_HEADROOM_BYTES + 3 * size, disk_usage=Usage(500 * GIB))
    assert stage_dataset(store, "s3://b/d.zip", tmp_path / "dataset", BIG_STAGING, scratch=roomy).is_file()


def test_zip_central_directory_is_read_before_extracting(tmp_path):
    archive = tmp_path / "z.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.yaml", b"names: [a]\n")
        zf.writestr("big.bin", b"\0" * (8 << 20))  # 8 MiB of zeros in ~8 KiB
    size = archive.stat().st_size
    store = ListingStore(archives={"z.zip": archive})
    scratch = Scratch(budget=SCRATCH_HEADROOM_BYTES + (4 << 20), disk_usage=Usage(500 * GIB))
    with pytest.raises(ScratchTooSmall) as err:
        stage_dataset(store, "s3://b/z.zip", tmp_path / "dataset", BIG_STAGING, scratch=scratch)
    want = r"8.0 MiB for its 2 files by the zip's central directory, [0-9.]+ KiB for the archive while it is"
    assert re.search(want, str(err.value)), err.value
    assert store.gets() == ["z.zip"] and size < (1 << 20)
    assert not any(p.is_file() for p in (tmp_path / "dataset").rglob("*"))  # nothing extracted
    assert not list(tmp_path.glob(".archive-*"))  # and the archive removed


def test_tar_extracting_beyond_the_room_is_stopped_while_it_is_written(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("big.bin")
        info.size = 8 << 20
        tf.addfile(info, io.BytesIO(b"\0" * info.size))
    archive = tmp_path / "t.tar.gz"
    archive.write_bytes(buf.getvalue())
    dest = tmp_path / "ds"
    dest.mkdir()
    room = Scratch(budget=SCRATCH_HEADROOM_BYTES + (2 << 20), disk_usage=Usage(500 * GIB)).room(dest)
    with pytest.raises(ScratchTooSmall, match=r"MiB for its contents up to where extraction stopped"):
        extract_tar(archive, dest, BIG, "s3://b/t.tar.gz", room)
    assert (dest / "big.bin").stat().st_size <= (3 << 20)  # stopped within a chunk of the room


def test_a_full_disk_while_extracting_is_no_corrupt_archive(tmp_path, monkeypatch):
    import errno

    from yolo_trainer import dataset

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    archive = _zip(tmp_path / "a.zip", {"data.yaml": b"x"})
    monkeypatch.setattr(dataset.os, "open", full)  # files are created with os.open (zipfile reads with io.open)
    dest = tmp_path / "ds"
    dest.mkdir()
    with pytest.raises(ScratchTooSmall, match=r"a.zip: the disk filled up while staging \(No space left"):
        extract_zip(archive, dest, BIG, "a.zip")


def test_a_tar_name_given_twice_extracts_as_the_last_entry(tmp_path):
    last = b"y" * 3

    def build(tf):
        for i in range(50):
            _add(tf, f"d/f{i}.txt", b"%d" % i)
        _add(tf, "d/twice", b"first")
        _add(tf, "d/twice", last)

    extract_tar(_tar(tmp_path / "a.tgz", build), tmp_path / "ds", BIG, "a.tgz")
    assert (tmp_path / "ds/d/twice").read_bytes() == last
    assert [(tmp_path / f"ds/d/f{i}.txt").read_bytes() for i in range(50)] == [b"%d" % i for i in range(50)]


def test_zip_threads_extract_every_file_and_the_last_of_a_repeated_name(tmp_path):
    entries = {f"d/{i}.bin": bytes([i % 256]) * (1000 + i) for i in range(200)}
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data in entries.items():
            zf.writestr(name, data)
        zf.writestr("d/7.bin", b"again")
    extract_zip(archive, tmp_path / "ds", BIG, "a.zip", threads=4)
    entries["d/7.bin"] = b"again"
    out = tmp_path / "ds"
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.bin")} == entries


def test_an_error_in_one_extracting_thread_stops_the_extraction(tmp_path):
    entries = {f"{i}.bin": b"x" * 100 for i in range(100)}
    limits = dataclasses.replace(BIG, max_bytes=5000)
    with pytest.raises(DatasetInvalid, match="extracts to more than 5000 bytes"):
        extract_zip(_zip(tmp_path / "a.zip", entries), tmp_path / "ds", limits, "a.zip", threads=4)
    assert len(list((tmp_path / "ds").glob("*.bin"))) < 100
