"""Pure helpers of the training step: hyperparameters, device, workers, results parsing, train args."""

from __future__ import annotations

from pathlib import Path

import pytest
from yolo_contract.exitcodes import ConfigInvalid
from yolo_contract.trainer_config import TrainerConfig
from yolo_trainer.results import best_from_results
from yolo_trainer.train import (
    available_cpus,
    choose_device,
    epoch_metrics,
    train_args,
    validate_hyperparameters,
)

pytestmark = pytest.mark.unit
GiB = 1 << 30


def cfg(**training) -> TrainerConfig:
    return TrainerConfig(
        name="j", model="yolov8n.yaml", dataset="s3://b/d", output="s3://b/o", training=training
    )


def test_valid_hyperparameters_pass_through():
    assert validate_hyperparameters({"lr0": 0.02, "mosaic": 0.5, "cos_lr": True}) == {
        "lr0": 0.02,
        "mosaic": 0.5,
        "cos_lr": True,
    }


@pytest.mark.parametrize(
    ("hp", "match"),
    [
        ({"lr_zero": 0.1}, "hyperparameters.lr_zero: not an Ultralytics train argument"),
        ({"data": "x.yaml"}, "hyperparameters.data: set by spec.dataset"),
        ({"device": "0"}, "hyperparameters.device: set by spec.resources.gpus"),
        ({"resume": True}, "hyperparameters.resume: set by the trainer"),
        ({"project": "/x"}, "hyperparameters.project: set by spec.output"),
        ({"epochs": 3}, "hyperparameters.epochs: set spec.training.epochs instead"),
        ({"freeze": 3}, "hyperparameters.freeze: set spec.training.freeze instead"),
        ({"lr0": "fast"}, "hyperparameters.lr0 must be a number"),
        ({"mosaic": 3.0}, "hyperparameters.mosaic must be between 0.0 and 1.0"),
    ],
)
def test_invalid_hyperparameters(hp, match):
    with pytest.raises(ConfigInvalid, match=match):
        validate_hyperparameters(hp)


def test_choose_device():
    assert choose_device(0) == "cpu"
    assert choose_device(1) == 0
    assert choose_device(4) == [0, 1, 2, 3]


def test_available_cpus_honours_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) >= 1
    (tmp_path / "cpu.max").write_text("100000000 100000\n")
    import os

    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_best_from_results():
    text = "epoch,time,train/box_loss,metrics/mAP50-95(B)\n1,1.0,2.0,0.10\n2,2.0,1.5,0.30\n3,3.0,1.2,0.25\n"
    assert best_from_results(text) == (0.30, 2)
    assert best_from_results("") == (None, None)
    assert best_from_results("epoch,metrics/mAP50-95(B)\n1,nan\n") == (None, None)
    assert best_from_results(text + "4,4.0,1.0,0.9") == (0.30, 2)  # a row still being written


def test_epoch_metrics_maps_ultralytics_keys():
    m = epoch_metrics(
        {
            "metrics/precision(B)": 0.5,
            "metrics/recall(B)": 0.25,
            "metrics/mAP50(B)": 0.4,
            "metrics/mAP50-95(B)": float("nan"),
        },
        {"train/box_loss": 1.25, "train/cls_loss": 2.0, "train/dfl_loss": 0.5},
    )
    dumped = m.model_dump(by_alias=True, exclude_none=True)
    assert dumped == {
        "precision": 0.5,
        "recall": 0.25,
        "map50": 0.4,
        "boxLoss": 1.25,
        "clsLoss": 2.0,
        "dflLoss": 0.5,
    }


def test_train_args_owned_keys_win_over_hyperparameters():
    c = cfg(epochs=3, imgsz=64, batch=4, freeze=10, seed=7)
    args = train_args(c, Path("/w/data.yaml"), Path("/w/runs"), "run", "cpu", 0, {"lr0": 0.02})
    assert args["data"] == "/w/data.yaml" and args["epochs"] == 3 and args["imgsz"] == 64
    assert args["freeze"] == 10 and args["seed"] == 7 and args["lr0"] == 0.02
    assert args["project"] == "/w/runs" and args["name"] == "run" and args["exist_ok"] is True
    assert args["plots"] is True and args["device"] == "cpu"
    assert "freeze" not in train_args(cfg(), Path("d"), Path("p"), "n", 0, 2, {})
