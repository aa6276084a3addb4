"""The run's summary quotes the figures tests print (tests/conftest.py)."""

import pytest

from tests.conftest import figure_lines

pytestmark = pytest.mark.unit


def test_figure_lines_keep_the_marked_lines_and_a_kubectl_table():
    text = (
        "noise\nHA-FIGURE takeover_s=17.4\n$ kubectl get tj,jobs,pods -o wide   # while training\n"
        "NAME  READY\ntj/x  1/1\n\nmore noise\n"
    )
    assert figure_lines(text) == [
        "HA-FIGURE takeover_s=17.4",
        "$ kubectl get tj,jobs,pods -o wide   # while training",
        "    NAME  READY",
        "    tj/x  1/1",
    ]
    assert figure_lines("nothing to see\n") == []


def test_a_kubectl_table_of_several_kinds_is_kept_whole():
    text = ("$ kubectl get tj,jobs,pods -o wide\nNAME  PHASE\ntj/x  Training\n\nNAME  STATUS\njob/x-train  Running\n"
            "\nNAME  READY\npod/x-0  1/1\n\nafterwards\nKUEUE-FIGURE held\n")  # fmt: skip
    assert figure_lines(text) == [
        "$ kubectl get tj,jobs,pods -o wide",
        "    NAME  PHASE", "    tj/x  Training", "    NAME  STATUS", "    job/x-train  Running",
        "    NAME  READY", "    pod/x-0  1/1",
        "KUEUE-FIGURE held",
    ]  # fmt: skip
