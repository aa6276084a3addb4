"""Final outputs: model exports and publishing a run's files under ``<job_prefix>/``.

Commit protocol (readers never see a mix of two runs)::

    1. delete <job_prefix>/metrics.json      (un-commit whatever an earlier run of this job published)
    2. upload weights/best.pt, weights/last.pt, results.csv, args.yaml, plots/*, test/*, serving/*
    3. put    <job_prefix>/metrics.json      LAST: the commit marker
    4. delete objects of earlier runs that step 2 did not overwrite (best effort)

``metrics.json`` names the run (``runId``) and lists every object of the run with its size and ETag. A reader
that wants a consistent set reads metrics.json first and then fetches the listed objects (optionally with
``If-Match: <etag>``); no metrics.json means nothing is committed (a run is publishing, or failed).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from yolo_contract.exitcodes import ConfigInvalid, TrainerError
from yolo_contract.exports import EXPORT_REQUIREMENTS, OPENVINO_STEM, SERVING_DIR, SERVING_FILE, serving_prefix
from yolo_contract.progress import Artifacts

from .evaluate import TEST_DIR
from .s3 import S3Store, join_key, parse_s3_uri, s3_uri

log = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
#: What a run publishes under the job prefix (exports/: the layout before serving/, still tidied).
PUBLISHED_TOPS = frozenset({"weights", "plots", "exports", TEST_DIR, SERVING_DIR, "results.csv", "args.yaml"})
PLOT_SUFFIXES = (".png", ".jpg")
# The Python packages each export format needs (yolo_contract.exports, the same table as the API's enum) are
# checked before training, so an image without one fails in seconds.
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".csv": "text/csv",
    ".yaml": "application/yaml",
    ".json": "application/json",
}


def check_export_formats(formats: list[str], has_module=None) -> None:
    """ConfigInvalid for an unknown format or one whose Python package is not installed in this image."""
    has_module = has_module or (lambda m: importlib.util.find_spec(m) is not None)
    for fmt in formats:
        if fmt not in EXPORT_REQUIREMENTS:
            raise ConfigInvalid(
                f"unknown export format {fmt!r}; supported: {', '.join(sorted(EXPORT_REQUIREMENTS))}"
            )
        missing = [m for m in EXPORT_REQUIREMENTS[fmt] if not has_module(m)]
        if missing:
            raise ConfigInvalid(
                f"export format {fmt!r} needs the Python package(s) {', '.join(missing)}, "
                "which the trainer image "
                "does not have; remove it from exportFormats or use an image that includes it"
            )


def export_models(best_pt: Path, formats: list[str], imgsz: int) -> tuple[dict[str, Path], dict[str, str]]:
    """Exports best.pt; returns ({format: file or folder}, {format: error}). A failed export loses no weights."""
    from ultralytics import YOLO

    files: dict[str, Path] = {}
    errors: dict[str, str] = {}
    for fmt in formats:
        try:
            kwargs: dict[str, Any] = {"format": fmt, "imgsz": imgsz, "device": "cpu"}
            if fmt == "onnx" and importlib.util.find_spec("onnxslim") is None:
                kwargs["simplify"] = False  # never let Ultralytics try to pip-install it
            out = YOLO(str(best_pt)).export(**kwargs)
            if not out or not Path(out).exists():
                raise TrainerError(f"export to {fmt} produced no file")
            files[fmt] = Path(out)
        except Exception as e:
            log.error("export to %s failed: %s", fmt, e)
            errors[fmt] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
    return files, errors


def serving_files(fmt: str, path: Path) -> list[tuple[Path, str]]:
    """An export in the model-repository layout: (local file, key relative to the job prefix)."""
    base = serving_prefix(fmt)
    if path.is_file():
        return [(path, f"{base}/{SERVING_FILE.get(fmt, path.name)}")]
    out = []
    for q in sorted(path.rglob("*")):
        if not q.is_file():
            continue
        rel = q.relative_to(path).as_posix()
        if fmt == "openvino" and q.parent == path and q.suffix in (".xml", ".bin"):
            rel = f"{OPENVINO_STEM}{q.suffix}"  # best.xml/best.bin -> model.xml/model.bin
        out.append((q, f"{base}/{rel}"))
    return out


def serving_uri(fmt: str, keys: list[str]) -> str | None:
    """The key naming an export in status.artifacts.exports: its model file (.onnx, .xml, .pt)."""
    base = serving_prefix(fmt) + "/"
    mine = [k for k in keys if k.startswith(base)]
    for k in mine:
        if k.endswith((".onnx", ".xml", ".pt")):
            return k
    return mine[0] if mine else None


def collect_files(
    save_dir: Path, exports: dict[str, Path] | None = None, test_dir: Path | None = None
) -> list[tuple[Path, str]]:
    """(local file, key relative to the job prefix) for everything a run publishes."""
    out: list[tuple[Path, str]] = []
    for name in ("weights/best.pt", "weights/last.pt", "results.csv", "args.yaml"):
        if (save_dir / name).is_file():
            out.append((save_dir / name, name))
    for p in sorted(save_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in PLOT_SUFFIXES:
            out.append((p, f"plots/{p.name}"))
    if test_dir is not None and test_dir.is_dir():
        out.extend((p, f"{TEST_DIR}/{p.name}") for p in sorted(test_dir.iterdir()) if p.is_file())
    for fmt, p in (exports or {}).items():
        out.extend(serving_files(fmt, p))
    return out


def _clean_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def publish(
    store: S3Store,
    job_prefix: str,
    files: list[tuple[Path, str]],
    metrics: dict[str, Any],
    run_id: str,
    extra: dict[str, Any] | None = None,
    concurrency: int = 4,
) -> Artifacts:
    bucket, prefix = parse_s3_uri(job_prefix)
    marker = join_key(prefix, METRICS_JSON)
    store.delete(bucket, marker)  # 1. un-commit

    def put(item: tuple[Path, str]) -> tuple[str, dict[str, Any]]:
        path, rel = item
        etag = store.upload_file(path, bucket, join_key(prefix, rel), CONTENT_TYPES.get(path.suffix.lower()))
        return rel, {"size": path.stat().st_size, "etag": etag}

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-up") as pool:
        objects = dict(pool.map(put, files))  # 2. upload (first error propagates)

    body = {
        "runId": run_id,
        "completedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metrics": {k: _clean_number(v) for k, v in metrics.items()},
        **(extra or {}),
        "objects": objects,
    }
    store.put_bytes(bucket, marker, json.dumps(body, indent=1).encode())  # 3. commit
    _delete_stale(store, bucket, prefix, set(objects) | {METRICS_JSON})  # 4. tidy

    def uri(rel: str) -> str | None:
        return s3_uri(bucket, join_key(prefix, rel)) if rel in objects else None

    formats = sorted({r.split("/")[1] for r in objects if r.startswith(SERVING_DIR + "/")})
    exports = [s3_uri(bucket, join_key(prefix, k)) for f in formats if (k := serving_uri(f, list(objects)))]

    def folder(name: str) -> str | None:
        has = any(r.startswith(name + "/") for r in objects)
        return s3_uri(bucket, join_key(prefix, name)) + "/" if has else None

    return Artifacts(
        best_weights=uri("weights/best.pt"),
        last_weights=uri("weights/last.pt"),
        results=uri("results.csv"),
        metrics=s3_uri(bucket, marker),
        plots=folder("plots"),
        exports=exports or None,
        serving=folder(SERVING_DIR),
        test=folder(TEST_DIR),
        run_id=run_id,
    )


def _delete_stale(store: S3Store, bucket: str, prefix: str, keep: set[str]) -> None:
    try:
        for obj in store.list(bucket, prefix + "/"):
            rel = obj.key[len(prefix) + 1 :]
            top = rel.split("/", 1)[0]
            if rel not in keep and top in PUBLISHED_TOPS:
                store.delete(bucket, obj.key)
    except Exception as e:  # stale objects are not named by metrics.json; leaving them is harmless
        log.warning("could not delete stale outputs: %s", e)
