"""results.csv is read in one place (yolo_trainer.results), with one epoch convention: epochs completed."""

from __future__ import annotations

import pytest
from yolo_trainer.checkpoint import CheckpointState, epoch_folder
from yolo_trainer.results import parse_results, results_through

pytestmark = pytest.mark.unit

CSV = "  epoch,  time, metrics/mAP50-95(B)\n1,1.5,0.1\n2,3.0,0.3\n3,4.5,0.2\n"


def test_every_reader_agrees_on_which_rows_are_complete():
    torn = CSV + "4,6.0,0.9"
    assert [r.epoch for r in parse_results(torn)] == [1, 2, 3]
    assert results_through(torn, 99) == CSV
    assert parse_results(CSV)[1].values["metrics/mAP50-95(B)"] == "0.3" and parse_results(CSV)[1].time == 3.0


def test_a_checkpoint_is_named_and_stored_by_epochs_completed():
    state = CheckpointState(3, "s3://b/p/checkpoints/e000003/last.pt", None, "run", "fp")
    assert epoch_folder(state.epoch) == "e000003"
    assert CheckpointState.from_json(state.to_json()) == state
    assert b'"epoch": 3' in state.to_json()  # state.json as every earlier release wrote it
