"""Export formats: the ones the trainer image can produce, and where a model server finds them.

One declaration for both sides: the API's ``spec.exportFormats`` enum (``yolo_operator.api.types.ExportFormat``)
is :data:`EXPORT_FORMATS`, so admission refuses a format this image cannot export, naming it; the trainer
checks the Python packages in :data:`EXPORT_REQUIREMENTS` before the first epoch (an image built without them
fails in seconds, not after training).

Exports are published in the model-repository layout that KServe/OpenShift AI model serving, OpenVINO Model
Server and Triton read (``<model>/<version>/<files>``)::

    <job>/serving/onnx/1/model.onnx
    <job>/serving/openvino/1/model.xml, model.bin (+ metadata.yaml)
    <job>/serving/torchscript/1/model.pt
"""

from __future__ import annotations

from typing import Literal

#: Ultralytics ``format=`` -> the Python modules its export imports (beyond torch and ultralytics).
EXPORT_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "torchscript": (),
    "onnx": ("onnx", "onnxslim", "onnxruntime"),
    "openvino": ("openvino",),
}
EXPORT_FORMATS: tuple[str, ...] = tuple(EXPORT_REQUIREMENTS)
#: One of EXPORT_FORMATS, as a type: the API's spec.exportFormats and the trainer's config both refuse any other
#: at validation, naming the field.
ExportFormat = Literal[EXPORT_FORMATS]  # type: ignore[valid-type]
#: Folder (under the job prefix) holding the model repository.
SERVING_DIR = "serving"
#: Version folder of the one model version a job publishes.
SERVING_VERSION = "1"
#: File name a model server expects in the version folder, per single-file format.
SERVING_FILE: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}
#: OpenVINO's IR: Ultralytics writes best.xml/best.bin; OVMS loads any name, KServe's runtime model.xml/bin.
OPENVINO_STEM = "model"


def serving_prefix(fmt: str) -> str:
    """The version folder of a format, relative to the job prefix: ``serving/onnx/1``."""
    return f"{SERVING_DIR}/{fmt}/{SERVING_VERSION}"
