"""Test-split evaluation: the best weights on the dataset's held-out test split, after training.

Ultralytics never reads the test split while training (it validates on ``val``); the classic 80/10/10 workflow
scores the finished model on ``test`` once. What comes out goes under ``<job>/test/``: ``metrics.json``
(overall and per-class precision, recall, mAP50 and mAP50-95, the confusion matrix as numbers) and
Ultralytics' plots (confusion matrices, PR/P/R/F1 curves, sample predictions).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolo_contract.progress import TestMetrics

log = logging.getLogger(__name__)

TEST_DIR = "test"


@dataclass
class TestEvaluation:
    metrics: TestMetrics
    body: dict[str, Any]  # <job>/test/metrics.json
    dir: Path  # the local folder holding metrics.json and the plots


def _num(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None


def evaluate_test(
    best_pt: Path, data_yaml: Path, out_dir: Path, imgsz: int, batch: int, device: Any, workers: int
) -> TestEvaluation:
    """Validates ``best_pt`` on the ``test`` split of ``data_yaml``; writes out_dir/metrics.json and plots."""
    from ultralytics import YOLO

    model = YOLO(str(best_pt))
    m = model.val(
        data=str(data_yaml),
        split="test",
        imgsz=imgsz,
        batch=batch,
        device=device,
        workers=workers,
        project=str(out_dir.parent),
        name=out_dir.name,
        exist_ok=True,
        plots=True,
        verbose=False,
    )
    names = {int(k): str(v) for k, v in (m.names or {}).items()}
    box = m.box
    per_class = []
    for i, c in enumerate(box.ap_class_index):
        c = int(c)
        per_class.append(
            {
                "class": c,
                "name": names.get(c, str(c)),
                "images": int(m.nt_per_image[c]) if m.nt_per_image is not None else None,
                "instances": int(m.nt_per_class[c]) if m.nt_per_class is not None else None,
                "precision": _num(box.p[i]),
                "recall": _num(box.r[i]),
                "map50": _num(box.ap50[i]),
                "map50-95": _num(box.ap[i]),
            }
        )
    cm = getattr(m, "confusion_matrix", None)
    metrics = TestMetrics(
        precision=_num(box.mp),
        recall=_num(box.mr),
        map50=_num(box.map50),
        map50_95=_num(box.map),
        instances=int(m.nt_per_class.sum()) if m.nt_per_class is not None else None,
    )
    body = {
        "split": "test",
        "weights": "weights/best.pt",
        "metrics": metrics.model_dump(by_alias=True, exclude_none=True),
        "perClass": per_class,
        "confusionMatrix": {
            # rows: predicted class, columns: true class; the last row/column is background (Ultralytics' layout)
            "labels": [*(names[i] for i in sorted(names)), "background"],
            "matrix": cm.matrix.astype(int).tolist() if cm is not None else None,
        },
        "speedMs": {k: _num(v) for k, v in (m.speed or {}).items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(body, indent=1))
    log.info("test split: mAP50 %s mAP50-95 %s (%d classes)", metrics.map50, metrics.map50_95, len(per_class))
    return TestEvaluation(metrics, body, out_dir)
