"""Tiny synthetic YOLO datasets for tests and demos (no downloads, deterministic).

Each image is a flat background with 1-3 filled rectangles; class ``c`` is always drawn in ``COLORS[c]`` so a
model can actually learn it. Labels are exact YOLO boxes (``cls xc yc w h``, normalized).

Layouts:
- ``write_yolo_dataset(root)``: ``data.yaml`` + ``images/{train,val}`` + ``labels/{train,val}`` (Ultralytics).
- ``write_roboflow_dataset(root)``: ``data.yaml`` with ``../train/images`` style paths + ``train/images``,
  ``train/labels``, ``valid/...``, ``test/...`` (the Roboflow "YOLOv8" export).
- ``zip_dir`` / ``tar_dir`` pack either layout; ``upload_dir`` puts a tree under an S3 prefix.
"""

from __future__ import annotations

import io
import random
import tarfile
import zipfile
from pathlib import Path

import yaml

COLORS = [(220, 40, 40), (40, 200, 60), (40, 80, 230), (230, 200, 30)]
DEFAULT_NAMES = ["red", "green", "blue", "yellow"]


def _image_and_labels(rng: random.Random, size: int, nc: int) -> tuple[bytes, list[str]]:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (rng.randint(0, 60),) * 3)
    draw = ImageDraw.Draw(img)
    lines = []
    for _ in range(rng.randint(1, 3)):
        c = rng.randrange(nc)
        w, h = rng.randint(size // 5, size // 2), rng.randint(size // 5, size // 2)
        x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
        draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=COLORS[c % len(COLORS)])
        lines.append(f"{c} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue(), lines


def _write_split(
    img_dir: Path, lbl_dir: Path, n: int, rng: random.Random, size: int, nc: int, tag: str
) -> None:
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data, lines = _image_and_labels(rng, size, nc)
        (img_dir / f"{tag}_{i:04d}.jpg").write_bytes(data)
        (lbl_dir / f"{tag}_{i:04d}.txt").write_text("\n".join(lines) + "\n")


def write_yolo_dataset(
    root: str | Path, n_train: int = 16, n_val: int = 8, nc: int = 2, size: int = 64, seed: int = 0
) -> Path:
    """Ultralytics layout; returns the data.yaml path (split paths relative to it)."""
    root = Path(root)
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        _write_split(root / "images" / split, root / "labels" / split, n, rng, size, nc, split)
    data = {"train": "images/train", "val": "images/val", "nc": nc, "names": DEFAULT_NAMES[:nc]}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


def write_roboflow_dataset(
    root: str | Path,
    n_train: int = 16,
    n_val: int = 8,
    n_test: int = 4,
    nc: int = 2,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Roboflow YOLOv8 export layout (``../train/images`` paths); returns the data.yaml path."""
    root = Path(root)
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("valid", n_val), ("test", n_test)):
        _write_split(root / split / "images", root / split / "labels", n, rng, size, nc, split)
    data = {
        "train": "../train/images",
        "val": "../valid/images",
        "test": "../test/images",
        "nc": nc,
        "names": DEFAULT_NAMES[:nc],
        "roboflow": {"workspace": "synthetic", "project": "rectangles", "version": 1},
    }
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


def zip_dir(root: str | Path, dest: str | Path) -> Path:
    root, dest = Path(root), Path(dest)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    return dest


def tar_dir(root: str | Path, dest: str | Path) -> Path:
    root, dest = Path(root), Path(dest)
    mode = "w:gz" if dest.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(dest, mode) as tf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                tf.add(p, p.relative_to(root).as_posix())
    return dest


def upload_dir(s3_client, bucket: str, prefix: str, root: str | Path) -> int:
    """Uploads every file under root to s3://bucket/prefix/...; returns the number of objects."""
    root = Path(root)
    n = 0
    for p in sorted(root.rglob("*")):
        if p.is_file():
            s3_client.upload_file(str(p), bucket, f"{prefix.strip('/')}/{p.relative_to(root).as_posix()}")
            n += 1
    return n
