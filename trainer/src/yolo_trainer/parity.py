"""ONNX parity: does onnxruntime, given the exported model.onnx, detect what the .pt model detects?

Both models get the same input (each image letterboxed to ``imgsz`` x ``imgsz``, as the static-shape export
expects) and their raw outputs go through the same NMS. Compared, per image:

* raw outputs: the largest difference of a box coordinate (pixels at ``imgsz``) and of a class score;
* detections (NMS at ``conf``): the same number, each matched to one of the other model's of the same class
  with IoU >= ``min_iou`` and a confidence within ``max_conf_diff``.

:data:`TOLERANCE` states the bounds; FP32 on CPU typically differs by 1e-5 or less (Conv+BN fusion and
operator order).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
TOLERANCE = {"maxBoxDiffPx": 0.05, "maxScoreDiff": 1e-3, "minIoU": 0.99, "maxConfDiff": 1e-3, "conf": 0.25}
MAX_IMAGES = 64


def split_images(data_yaml: Path, split: str = "val", limit: int = MAX_IMAGES) -> list[Path]:
    """Images of a split of a (trainer-written, absolute-path) data.yaml: folders or .txt lists."""
    data = yaml.safe_load(Path(data_yaml).read_text())
    entries = data.get(split) or []
    entries = entries if isinstance(entries, list) else [entries]
    base = Path(data.get("path") or Path(data_yaml).parent)
    out: list[Path] = []
    for e in entries:
        p = Path(e) if Path(e).is_absolute() else base / e
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                q = Path(line.strip())
                q = q if q.is_absolute() else p.parent / q
                if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file():
                    out.append(q)
    return out[:limit]


def _letterbox(path: Path, imgsz: int):
    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox

    im = cv2.imread(str(path))
    if im is None:
        raise ValueError(f"cannot read image {path}")
    im = LetterBox((imgsz, imgsz), auto=False, stride=32)(image=im)
    im = im[..., ::-1].transpose(2, 0, 1)  # BGR HWC -> RGB CHW
    return (np.ascontiguousarray(im, dtype=np.float32) / 255.0)[None]


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 1.0


def onnx_parity(pt: Path, onnx: Path, images: list[Path], imgsz: int, tolerance: dict | None = None) -> dict[str, Any]:
    """The figures (and ``passed``) for ``images``; see the module docstring."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO
    from ultralytics.utils.nms import non_max_suppression

    tol = {**TOLERANCE, **(tolerance or {})}
    model = YOLO(str(pt)).model.float().eval()
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    box_diff = score_diff = conf_diff = 0.0
    min_iou = 1.0
    n_pt = n_onnx = matched = 0
    mismatched_images: list[str] = []
    for path in images:
        x = _letterbox(path, imgsz)
        with torch.inference_mode():
            y = model(torch.from_numpy(x))
        y_pt = (y[0] if isinstance(y, list | tuple) else y).numpy()
        y_ort = session.run(None, {input_name: x})[0]
        if y_pt.shape != y_ort.shape:
            raise ValueError(f"output shapes differ: .pt {y_pt.shape}, onnx {y_ort.shape}")
        box_diff = max(box_diff, float(np.abs(y_pt[:, :4] - y_ort[:, :4]).max()))
        score_diff = max(score_diff, float(np.abs(y_pt[:, 4:] - y_ort[:, 4:]).max()))
        d_pt, d_ort = (
            non_max_suppression(torch.from_numpy(np.ascontiguousarray(v)), conf_thres=tol["conf"])[0].numpy()
            for v in (y_pt, y_ort)
        )
        n_pt, n_onnx = n_pt + len(d_pt), n_onnx + len(d_ort)
        used: set[int] = set()
        ok = len(d_pt) == len(d_ort)
        for det in d_pt:
            best, best_j = -1.0, None
            for j, other in enumerate(d_ort):
                if j not in used and int(other[5]) == int(det[5]):
                    iou = _iou(det[:4], other[:4])
                    if iou > best:
                        best, best_j = iou, j
            if best_j is None:
                ok = False
                continue
            used.add(best_j)
            matched += 1
            min_iou = min(min_iou, float(best))
            conf_diff = max(conf_diff, abs(float(det[4]) - float(d_ort[best_j][4])))
        if not ok:
            mismatched_images.append(path.name)
    figures = {
        "images": len(images),
        "imgsz": imgsz,
        "maxBoxDiffPx": box_diff,
        "maxScoreDiff": score_diff,
        "detections": {"pt": n_pt, "onnx": n_onnx, "matched": matched},
        "minIoU": round(min_iou, 6),
        "maxConfDiff": conf_diff,
        "mismatchedImages": mismatched_images[:10],
        "tolerance": tol,
    }
    figures["passed"] = bool(
        images
        and not mismatched_images
        and box_diff <= tol["maxBoxDiffPx"]
        and score_diff <= tol["maxScoreDiff"]
        and min_iou >= tol["minIoU"]
        and conf_diff <= tol["maxConfDiff"]
    )
    return figures
