"""The contract's typed facts: the model source (yolo_contract.model_source) and the export formats, as the trainer's
config carries them; the compatibility path for a config that still carries the model as a plain string."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from yolo_contract.model_source import FileModel, HubModel, TrainingJobModel, UriModel, YamlModel, s3_location
from yolo_contract.trainer_config import CONFIG_ENV, TrainerConfig, load_config
from yolo_trainer.checkpoint import config_fingerprint
from yolo_trainer.cli import main

pytestmark = pytest.mark.unit
BASE = {"name": "j", "dataset": "s3://b/d/", "output": "s3://b/o/"}


def test_a_config_of_the_previous_release_with_a_string_model_still_loads(tmp_path):
    """A Job made by the previous operator release carries {"model": "<string>"} in YOLO_TRAINER_CONFIG, and a
    hand-written --config says ``model: yolov8n.pt``: both load as the kind the trainer made of such a string."""
    old = {**BASE, "model": "s3://runs/team-a/base/uid-1/weights/best.pt", "exportFormats": ["onnx"]}
    cfg = load_config(environ={CONFIG_ENV: json.dumps(old)})
    assert cfg.model == UriModel(uri="s3://runs/team-a/base/uid-1/weights/best.pt")
    assert s3_location(cfg.model) == old["model"] and cfg.export_formats == ["onnx"]
    path = tmp_path / "c.yaml"
    path.write_text("name: j\nmodel: yolov8n.pt\ndataset: s3://b/d/\noutput: s3://b/o/\n")
    assert load_config(path).model == HubModel(hub="yolov8n.pt")
    for text, want in (("yolov8n.yaml", YamlModel(yaml="yolov8n.yaml")), ("/m/x.pt", FileModel(path="/m/x.pt"))):
        assert TrainerConfig(**BASE, model=text).model == want


def test_the_typed_config_round_trips_and_keeps_a_checkpoints_fingerprint():
    """The JSON the operator writes carries each kind as an object; a checkpoint written by a trainer that read
    the model as a string stays resumable (the fingerprint counts the model's text)."""
    parent = TrainingJobModel(uri="s3://runs/a/p/u/weights/best.pt", namespace="a", name="p", uid="u",
                              metrics="s3://runs/a/p/u/metrics.json")  # fmt: skip
    typed = TrainerConfig(**BASE, model=parent)
    wire = json.loads(typed.to_env_json())["model"]
    assert wire == {"kind": "fromTrainingJob", "uri": parent.uri, "namespace": "a", "name": "p", "uid": "u",
                    "metrics": parent.metrics}  # fmt: skip
    assert TrainerConfig.model_validate_json(typed.to_env_json()).model == parent
    as_string = TrainerConfig(**BASE, model=parent.uri)
    assert config_fingerprint(typed) == config_fingerprint(as_string)


def test_a_model_object_without_its_kind_or_of_an_unknown_kind_is_refused_naming_model():
    for bad in ({"hub": "yolov8n.pt"}, {"kind": "torrent", "uri": "magnet:x"}):
        with pytest.raises(ValidationError) as e:
            TrainerConfig(**BASE, model=bad)
        assert e.value.errors()[0]["loc"][0] == "model"
    with pytest.raises(ValidationError, match="s3://"):  # a parent's weights are read from S3
        TrainingJobModel(uri="https://x/best.pt", namespace="a", name="p")


def test_a_bad_export_format_fails_at_validation_naming_the_field(tmp_path, monkeypatch):
    with pytest.raises(ValidationError) as e:
        TrainerConfig(**BASE, model="m.yaml", export_formats=["onnx", "tflite"])
    (err,) = e.value.errors()
    assert err["loc"] == ("export_formats", 1) and "'onnx'" in err["msg"] and "'openvino'" in err["msg"]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**BASE, "model": "m.yaml", "export_formats": ["tflite"]}))
    log = tmp_path / "term"
    monkeypatch.setenv("YOLO_TERMINATION_LOG", str(log))
    assert main(["--config", str(cfg)]) == 10
    assert "ConfigInvalid: invalid trainer configuration: export_formats.0: Input should be " in log.read_text()
