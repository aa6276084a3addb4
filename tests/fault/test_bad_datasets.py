"""Bad datasets and hostile archives, end to end: the real ``yolo-trainer`` stages each from the test bed's S3
and must stop before training with exit 11, a one-line ``DatasetInvalid`` message naming the file (and line),
no traceback, nothing published and, for archives, nothing written outside the dataset directory.

The rules themselves are unit-tested in tests/unit/test_trainer_dataset.py; this proves them through the CLI.

Decisions:
- An empty label file is a background image (Ultralytics' own convention, useful against false positives):
  accepted and counted in the dataset summary. Only a train split without any labeled object is an error.
- The same image in train and val (same name, same bytes, or the same file listed twice) is an error:
  validation would score images the model trained on, so mAP and the choice of best.pt would be silently
  wrong. The same name with different bytes is only a warning: many exports number every split from 0001.
"""

from __future__ import annotations

import io
import random
import shutil
import tarfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from yolo_trainer.testing import upload_dir, write_yolo_dataset

from tests.trainer_fixtures import Result, TrainerRunner, list_keys, read_json

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def assert_dataset_invalid(res: Result, *needles: str) -> None:
    assert res.rc == 11, f"rc={res.rc} {res.termination}\n{res.stderr[-3000:]}"
    assert res.termination.startswith("DatasetInvalid: ") and "\n" not in res.termination, res.termination
    for n in needles:
        assert n in res.termination, f"{n!r} not in {res.termination!r}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert not res.of("epoch"), "a bad dataset reached training"


def _noisy_jpeg(seed: int, size: int = 256) -> bytes:
    """A photo-like JPEG (tens of kB): its headers end long before the data, as in a real photo."""
    from PIL import Image

    img = Image.frombytes("RGB", (size, size), random.Random(seed).randbytes(size * size * 3))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _set_yaml(root: Path, **changes) -> None:
    data = yaml.safe_load((root / "data.yaml").read_text())
    data.update(changes)
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


# Each case breaks a fresh 4+2 image dataset at ``root``; ``outside`` is a folder next to the trainer's work
# directory (on the trainer's own disk) holding a few images, for paths that try to reach out of the dataset.
# Returns the strings the termination message must contain.
Case = Callable[[Path, Path], list[str]]


def truncated_jpeg(root: Path, outside: Path) -> list[str]:
    data = _noisy_jpeg(1)
    (root / "images/train/train_0002.jpg").write_bytes(data[: len(data) * 6 // 10])  # an interrupted upload
    return ["images/train/train_0002.jpg", "unreadable image", "truncated"]


def all_labels_empty(root: Path, outside: Path) -> list[str]:
    for p in (root / "labels/train").glob("*.txt"):
        p.write_text("")
    return ["'train' split has no labeled objects"]


def nan_coordinate(root: Path, outside: Path) -> list[str]:
    (root / "labels/train/train_0001.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 nan 0.2 0.2\n")
    return ["labels/train/train_0001.txt:2", "not finite"]


def coordinate_out_of_range(root: Path, outside: Path) -> list[str]:
    (root / "labels/val/val_0000.txt").write_text("0 1.25 0.5 0.2 0.2\n")  # pixels or a bad export
    return ["labels/val/val_0000.txt:1", "outside [0, 1]"]


def same_image_in_train_and_val(root: Path, outside: Path) -> list[str]:
    shutil.copyfile(root / "images/train/train_0000.jpg", root / "images/val/train_0000.jpg")
    shutil.copyfile(root / "labels/train/train_0000.txt", root / "labels/val/train_0000.txt")
    return ["images/val/train_0000.jpg is identical to images/train/train_0000.jpg", "also train images"]


def val_is_the_train_folder(root: Path, outside: Path) -> list[str]:
    _set_yaml(root, val="images/train")
    return ["4 val image(s) are also train images", "listed in both"]


def split_path_escapes_with_dotdot(root: Path, outside: Path) -> list[str]:
    # work-<name>/dataset/data.yaml -> ../../outside/images is the folder next to the work directory
    _set_yaml(root, train="../../outside/images")
    return ["train: '../../outside/images' points outside the dataset"]


def split_path_is_absolute(root: Path, outside: Path) -> list[str]:
    _set_yaml(root, val=str(outside / "images"))
    return [f"val: absolute path '{outside / 'images'}' is not allowed"]


def list_file_entry_escapes(root: Path, outside: Path) -> list[str]:
    (root / "train.txt").write_text("images/train/train_0000.jpg\n../../outside/images/o_0000.jpg\n")
    _set_yaml(root, train="train.txt")
    return ["train.txt: image '../../outside/images/o_0000.jpg' points outside the dataset"]


CASES: list[Case] = [
    truncated_jpeg,
    all_labels_empty,
    nan_coordinate,
    coordinate_out_of_range,
    same_image_in_train_and_val,
    val_is_the_train_folder,
    split_path_escapes_with_dotdot,
    split_path_is_absolute,
    list_file_entry_escapes,
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_dataset_is_dataset_invalid(case: Case, s3_env, s3_client, bucket, tmp_path):
    outside = tmp_path / "outside"  # a labeled image folder on the trainer's disk, outside its dataset
    for i in range(2):
        (outside / "images").mkdir(parents=True, exist_ok=True)
        (outside / "labels").mkdir(exist_ok=True)
        (outside / f"images/o_{i:04d}.jpg").write_bytes(_noisy_jpeg(10 + i, 64))
        (outside / f"labels/o_{i:04d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")

    root = tmp_path / "src"
    write_yolo_dataset(root, n_train=4, n_val=2, seed=3)
    needles = case(root, outside)
    name = case.__name__.replace("_", "-")
    upload_dir(s3_client, bucket, f"ds/{name}", root)
    runner = TrainerRunner(s3_env, tmp_path)
    t0 = time.monotonic()
    res = runner.run(runner.config(name, "yolov8n.yaml", f"s3://{bucket}/ds/{name}", f"s3://{bucket}/out"))
    took = time.monotonic() - t0
    assert_dataset_invalid(res, *needles)
    assert list_keys(s3_client, bucket, f"out/ns1/{name}/") == []
    print(f"FAULT-FIGURE bad-dataset {case.__name__}: exit 11 in {took:.1f}s: {res.termination[:160]}")


@pytest.mark.timeout(300)
def test_empty_label_files_are_backgrounds_and_equal_names_only_warn(s3_env, s3_client, bucket, tmp_path):
    root = tmp_path / "src"
    write_yolo_dataset(root, n_train=6, n_val=3, seed=4)
    (root / "labels/train/train_0000.txt").write_text("")
    (root / "labels/val/val_0001.txt").write_text("\n")
    # Same file name as a train image, other bytes: not a leak.
    shutil.copyfile(root / "images/val/val_0000.jpg", root / "images/val/train_0003.jpg")
    shutil.copyfile(root / "labels/val/val_0000.txt", root / "labels/val/train_0003.txt")
    upload_dir(s3_client, bucket, "ds/backgrounds", root)
    runner = TrainerRunner(s3_env, tmp_path)
    cfg = runner.config("backgrounds", "yolov8n.yaml", f"s3://{bucket}/ds/backgrounds", f"s3://{bucket}/out")
    cfg["training"]["epochs"] = 1
    res = runner.run(cfg)
    assert res.rc == 0, f"rc={res.rc} {res.termination}\n{res.stderr[-3000:]}"
    splits = res.of("dataset")[0]["splits"]
    assert (splits["train"]["images"], splits["train"]["backgrounds"]) == (6, 1), splits
    assert (splits["val"]["images"], splits["val"]["backgrounds"]) == (4, 1), splits
    assert "share a file name with a train image but differ in content" in res.stderr
    assert read_json(s3_client, bucket, "out/ns1/backgrounds/metrics.json")["dataset"]["splits"] == splits


# --- hostile archives ----------------------------------------------------------------------------------------

TOKEN = "escaped-" + uuid.uuid4().hex[:8]


def _dataset_files(tmp: Path) -> dict[str, bytes]:
    root = tmp / "arcsrc"
    if not root.exists():
        write_yolo_dataset(root, n_train=4, n_val=2, seed=6)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # S_IFLNK: how zip stores a symlink
            zf.writestr(info, target)
    return path


def _tar(path: Path, entries: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, (kind, target) in (links or {}).items():  # links first: later entries would go through them
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# Each builds an archive from a valid dataset plus one hostile part; ``work`` is the trainer's work directory
# (the dataset lands in work/dataset). Returns (archive, needles, extra env).
def zip_dotdot_entry(tmp: Path, work: Path):
    files = {**_dataset_files(tmp), f"../../{TOKEN}.txt": b"evil"}
    return _zip(tmp / "a.zip", files), ["escapes the dataset directory", f"../../{TOKEN}.txt"], {}


def zip_absolute_entry(tmp: Path, work: Path):
    target = f"{tmp}/{TOKEN}-abs.txt"
    return _zip(tmp / "a.zip", {**_dataset_files(tmp), target: b"evil"}), ["is an absolute path", target], {}


def zip_symlink_entry(tmp: Path, work: Path):
    archive = _zip(tmp / "a.zip", _dataset_files(tmp), links={"images/train/x.jpg": "/etc/passwd"})
    return archive, ["'images/train/x.jpg' is a symlink"], {}


def tar_dotdot_entry(tmp: Path, work: Path):
    files = {**_dataset_files(tmp), f"images/../../../{TOKEN}.txt": b"evil"}
    return _tar(tmp / "a.tar.gz", files), ["escapes the dataset directory"], {}


def tar_absolute_entry(tmp: Path, work: Path):
    target = f"{tmp}/{TOKEN}-abs.txt"
    return _tar(tmp / "a.tar.gz", {**_dataset_files(tmp), target: b"evil"}), ["is an absolute path"], {}


def tar_symlinked_dir_pointing_out(tmp: Path, work: Path):
    # The classic: a link to a folder outside, then a file written "into" the link.
    outside = tmp / f"{TOKEN}-dir"
    outside.mkdir()
    files = {**_dataset_files(tmp), f"images/evil/{TOKEN}.txt": b"evil"}
    archive = _tar(tmp / "a.tar.gz", files, links={"images/evil": (tarfile.SYMTYPE, str(outside))})
    return archive, ["link 'images/evil'", "points outside the dataset"], {}


def tar_relative_symlink_pointing_out(tmp: Path, work: Path):
    archive = _tar(
        tmp / "a.tar.gz", _dataset_files(tmp), links={"images/train/x.jpg": (tarfile.SYMTYPE, "../../../../x")}
    )
    return archive, ["link 'images/train/x.jpg'", "points outside the dataset"], {}


def tar_hardlink_pointing_out(tmp: Path, work: Path):
    links = {"labels/x.txt": (tarfile.LNKTYPE, "/etc/passwd")}
    archive = _tar(tmp / "a.tar.gz", _dataset_files(tmp), links=links)
    return archive, ["link 'labels/x.txt'", "points outside the dataset"], {}


BOMB_LIMIT = 8 << 20


def zip_bomb_bytes(tmp: Path, work: Path):
    # 64 MiB of zeros deflate to ~64 kB; the limit stops extraction at 8 MiB, counted as bytes are written.
    archive = _zip(tmp / "a.zip", _dataset_files(tmp))
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf, zf.open("bomb.bin", "w") as f:
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert archive.stat().st_size < 1 << 20
    return archive, ["extracts to more than 8388608 bytes"], {"YOLO_TRAINER_MAX_DATASET_BYTES": str(BOMB_LIMIT)}


def zip_bomb_files(tmp: Path, work: Path):
    files = {**_dataset_files(tmp), **{f"many/{i:05d}.txt": b"" for i in range(600)}}
    return _zip(tmp / "a.zip", files), ["more than 200 files"], {"YOLO_TRAINER_MAX_DATASET_FILES": "200"}


ARCHIVES = [
    zip_dotdot_entry,
    zip_absolute_entry,
    zip_symlink_entry,
    tar_dotdot_entry,
    tar_absolute_entry,
    tar_symlinked_dir_pointing_out,
    tar_relative_symlink_pointing_out,
    tar_hardlink_pointing_out,
    zip_bomb_bytes,
    zip_bomb_files,
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", ARCHIVES, ids=[c.__name__ for c in ARCHIVES])
def test_hostile_archive_is_dataset_invalid_and_writes_nothing_outside(case, s3_env, s3_client, bucket, tmp_path):
    name = case.__name__.replace("_", "-")
    runner = TrainerRunner(s3_env, tmp_path)
    work = tmp_path / f"work-{name}"  # TrainerRunner.config's workDir
    archive, needles, env = case(tmp_path, work)
    key = f"archives/{name}{''.join(archive.suffixes)}"
    s3_client.upload_file(str(archive), bucket, key)
    cfg = runner.config(name, "yolov8n.yaml", f"s3://{bucket}/{key}", f"s3://{bucket}/out")
    assert cfg["workDir"] == str(work)
    archive.unlink()

    t0 = time.monotonic()
    res = runner.run(cfg, **env)
    took = time.monotonic() - t0

    assert_dataset_invalid(res, f"s3://{bucket}/{key}", *needles)
    assert list_keys(s3_client, bucket, f"out/ns1/{name}/") == []
    dataset = work / "dataset"
    # Nothing the archive carried exists outside work/dataset: no escaped file anywhere in this test's tmp
    # dir (which holds the work dir, ../.. of the dataset and the absolute targets), nothing in the link target.
    escaped = [p for p in tmp_path.rglob(f"*{TOKEN}*") if p.is_file() and not p.is_relative_to(dataset)]
    assert escaped == [], escaped
    for p in dataset.rglob("*") if dataset.exists() else []:
        assert not p.is_symlink(), f"link left in the staged dataset: {p}"
    assert not list(work.glob(".archive-*")), "the downloaded archive was left behind"
    if case is zip_bomb_bytes:
        written = sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file())
        assert written <= BOMB_LIMIT, f"{written} bytes written past the {BOMB_LIMIT} limit"
    if case is zip_bomb_files:
        assert sum(1 for p in dataset.rglob("*") if p.is_file()) <= 200
    print(f"FAULT-FIGURE hostile-archive {case.__name__}: exit 11 in {took:.1f}s, nothing outside the dataset")
