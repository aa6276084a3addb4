"""The console plugin's BUILT bundle (console-plugin/dist, `make console-plugin`) in a real Chromium, fed by the
bed's real API server while a TrainingJob trains: the Training tab draws more points as epochs complete.

The OpenShift console itself cannot be installed here, so a bare page plays its part
(tests/e2e/console_plugin_page/): it loads plugin-manifest.json and the plugin's module-federation entry as the
console does and shares React and a minimal SDK whose useK8sWatchResource polls the API server (GETs forwarded
with the bed kubeconfig's credentials).

The training: the real `yolo-trainer` as a local process, training real epochs and patching a real
TrainingJob's status on the bed's API server as it does from a pod; no helm, no operator, no real node (so no
e2e lock). The tab at both moments is saved as console-training-tab-{1,2}.png under .testbed/e2e/, and into
docs/images/ (the docs' screenshots) with YOLO_UPDATE_SCREENSHOTS=1.

test_training_tab_grows_while_a_job_trains_on_the_real_node: the whole product instead (chart, in-cluster
operator, trainer pod on the real node); helm and the real node: run it under the e2e lock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from yolo_dev import testbed
from yolo_dev.stack import Stack

from tests.e2e.console_plugin_page.server import PageServer
from tests.trainer_fixtures import TrainerRunner

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
EPOCHS = 12
POINTS = "svg path.yolo-point-boxLoss"  # one marker per epoch on the box loss curve (every epoch has a loss)
FIELDS = ("map50", "map50-95", "precision", "recall", "boxLoss", "clsLoss", "dflLoss", "lr", "gpuUtil")


@pytest.fixture(scope="module")
def dist() -> Path:
    """The production build (skipped by the script when dist/ is newer than its inputs)."""
    out = subprocess.run([str(ROOT / "hack" / "console-plugin.sh"), "build"], capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr
    dist = Path(out.stdout.strip())
    assert (dist / "plugin-manifest.json").is_file()
    assert Path(CHROMIUM).is_file(), "no chromium: `make console-plugin-test` installs it (console-plugin.sh browser)"
    return dist


@pytest.fixture
def plugin_namespace(kubectl):
    name = f"plugin-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def api_get(k8s_api) -> Callable[[str], tuple[int, bytes]]:
    """GETs forwarded to the bed's API server with the kubeconfig's credentials."""
    from kubernetes.client.exceptions import ApiException

    def get(path: str) -> tuple[int, bytes]:
        try:
            resp = k8s_api.call_api(path, "GET", auth_settings=["BearerToken"], _preload_content=False,
                                    _return_http_data_only=True)  # fmt: skip
            return 200, resp.data
        except ApiException as e:
            body = e.body or b""
            return e.status, body.encode() if isinstance(body, str) else body

    return get


def watch_the_tab_grow(k8s_api, namespace: str, name: str, history: Callable[[], list], shots: Path | None) -> str:
    """Opens the Training tab of namespace/name and checks it while the job trains: two moments, the second
    with more points; then that it draws exactly status.history, curve by curve. Returns a summary line."""
    from playwright.sync_api import sync_playwright

    with PageServer(api_get(k8s_api)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1150})
            page.goto(f"{server.url}/?namespace={namespace}&name={name}")
            page.wait_for_function("window.pluginLoaded || window.pluginError", timeout=60_000)
            assert page.evaluate("window.pluginError") is None, page.evaluate("window.pluginError")

            def drawn() -> int:
                return page.locator(POINTS).count()

            # First moment: two epochs drawn (the page polls the API server every second).
            testbed.wait_until(lambda: drawn() >= 2, 600, interval=1, what="the tab to draw 2 epochs")
            first = drawn()
            if shots:
                page.screenshot(path=str(shots / "console-training-tab-1.png"), full_page=True)
            # Second moment: at least three epochs later (or the run's last).
            testbed.wait_until(lambda: drawn() >= min(first + 3, EPOCHS), 600, interval=1, what="more epochs")
            second = drawn()
            if shots:
                page.screenshot(path=str(shots / "console-training-tab-2.png"), full_page=True)
            assert second > first, (first, second)

            # What it draws is the real status: on every curve, one marker per history point with that value.
            caught: dict[str, list] = {}

            def caught_up() -> bool:
                caught["points"] = history()
                return drawn() == len(caught["points"])

            testbed.wait_until(caught_up, 60, interval=1, what="the tab to catch up with status.history")
            points = caught["points"]
            for field in FIELDS:
                expected = sum(1 for pt in points if isinstance(pt.get(field), int | float))
                assert page.locator(f"svg path.yolo-point-{field}").count() == expected, (field, points)
            summary = page.locator("[data-test=training-summary]").text_content()
            assert summary.startswith("Epoch ") and f" of {EPOCHS} " in summary, summary
            assert server.api_requests > 2

            # The list page's sparkline: mAP50-95 of the same job, at most 24 points (SPARKLINE_MAX).
            page.goto(f"{server.url}/?list=1&namespace={namespace}")
            page.wait_for_function("window.pluginLoaded || window.pluginError", timeout=60_000)
            assert page.evaluate("window.pluginError") is None, page.evaluate("window.pluginError")
            spark = page.locator(f"[data-test=row-{name}] [data-test=sparkline]")
            spark.wait_for(timeout=30_000)

            def sparkline_is_the_history() -> bool:
                kept = sum(1 for pt in history() if isinstance(pt.get("map50-95"), int | float))
                return spark.get_attribute("data-points") == str(min(kept, 24))

            testbed.wait_until(sparkline_is_the_history, 60, interval=1, what="the sparkline to match the history")
            assert spark.locator("svg path").count() >= 1
            sparkline = spark.get_attribute("data-points")
            return f"drawn {first} then {second} epochs; {len(points)} = len(status.history); " \
                   f"{server.api_requests} API GETs; list sparkline {sparkline} points"  # fmt: skip
        finally:
            browser.close()


def test_training_tab_grows_while_a_job_trains_on_the_real_node(dist, bed, real_node, plugin_namespace, k8s_api):
    started = time.monotonic()
    namespace, name = plugin_namespace, "curves"
    stack = Stack()
    stack.install_chart([namespace])
    bucket = f"plugin-{uuid.uuid4().hex[:8]}"
    dataset = stack.upload_dataset(bucket, "datasets/shapes", images=16)
    stack.s3_secret(namespace)
    job = stack.training_job(name, dataset, f"s3://{bucket}/runs/", epochs=EPOCHS)
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))

    def history() -> list:
        return stack.get("tj", name, "-n", namespace).get("status", {}).get("history") or []

    line = watch_the_tab_grow(k8s_api, namespace, name, history, shots=None)
    print(f"PLUGIN-E2E real node: {line}; {time.monotonic() - started:.0f} s")
    stack.kubectl("delete", "tj", name, "-n", namespace, "--wait=false", check=False)


def test_training_tab_grows_while_the_trainer_reports_to_the_api_server(
    dist, bed, plugin_namespace, k8s_api, s3_env, tmp_path
):
    started = time.monotonic()
    namespace, name = plugin_namespace, "curves"
    stack = Stack()
    bucket = f"plugin-{uuid.uuid4().hex[:8]}"
    dataset = stack.upload_dataset(bucket, "datasets/shapes", images=16)
    # A real TrainingJob (the bed's CRD validates it); no operator watches this namespace, the trainer alone
    # writes its status, as in a pod.
    job = stack.training_job(name, dataset, f"s3://{bucket}/runs/", epochs=EPOCHS)
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))
    runner = TrainerRunner(s3_env, tmp_path)
    cfg = runner.config(name, "yolov8n.yaml", dataset, f"s3://{bucket}/runs/", epochs=EPOCHS, imgsz=64, batch=8,
                        workers=0)  # fmt: skip
    cfg["namespace"] = cfg["status"]["namespace"] = namespace
    proc, out, _ = runner.start(cfg, KUBECONFIG=str(testbed.KUBECONFIG))

    def history() -> list:
        assert proc.poll() in (None, 0), out.read_text()[-3000:]
        return stack.get("tj", name, "-n", namespace).get("status", {}).get("history") or []

    shots = stack.workdir / "console-plugin"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        line = watch_the_tab_grow(k8s_api, namespace, name, history, shots=shots)
    finally:
        proc.terminate()
        proc.wait(60)
    if os.environ.get("YOLO_UPDATE_SCREENSHOTS") == "1":
        for png in sorted(shots.glob("console-training-tab-*.png")):
            shutil.copy(png, IMAGES / png.name)
    print(f"PLUGIN-E2E local trainer: {line}; screenshots in {shots}; {time.monotonic() - started:.0f} s")
