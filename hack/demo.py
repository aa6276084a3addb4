"""`make demo`: the whole product on the local test bed, as a user would see it.

Installs the chart with helm (the operator runs in-cluster from its image, on the bed's real node), uploads a
generated dataset to S3, applies a TrainingJob whose trainer pod runs the trainer image on the real node
(containerd + kubelet; it advertises nvidia.com/gpu and trains on CPU), follows it live the way
`kubectl get tj -w` would, and ends with where the weights, metrics and plots are.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_dev import testbed
from yolo_dev.stack import Stack, table_row

NAMESPACE = "yolo-demo"
BUCKET = "yolo-demo"
EPOCHS = 30  # enough for the generated shapes to reach a mAP50-95 around 0.5 from scratch


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    t0 = time.monotonic()
    stack = Stack()
    stack.kubectl("create", "namespace", NAMESPACE, check=False)
    step(f"helm upgrade --install yolo-operator charts/yolo-operator --set watchNamespaces={{{NAMESPACE}}}")
    stack.install_chart([NAMESPACE])  # CRD, RBAC, the operator Deployment; leaves other namespaces alone
    pod = stack.operator_pod()
    print(f"operator pod {pod['metadata']['name']} Ready on node {pod['spec']['nodeName']}")

    step(f"uploading a generated dataset to s3://{BUCKET}/datasets/shapes/")
    dataset = stack.upload_dataset(BUCKET, "datasets/shapes", images=128)
    stack.kubectl("delete", "tj", "--all", "-n", NAMESPACE, "--wait=true", check=False)
    if stack.kubectl("get", "secret", "s3-credentials", "-n", NAMESPACE, check=False).returncode:
        stack.s3_secret(NAMESPACE)

    tj = stack.training_job("shapes", dataset, f"s3://{BUCKET}/runs/", epochs=EPOCHS)
    manifest = stack.workdir / "trainingjob.yaml"
    manifest.write_text(json.dumps(tj, indent=2))
    step(f"kubectl apply -f {manifest.relative_to(testbed.ROOT)}   (model yolov8n.yaml, {EPOCHS} epochs)")
    stack.kubectl("apply", "-n", NAMESPACE, "-f", str(manifest))

    step(f"kubectl get tj -n {NAMESPACE} -w")
    last = None
    status: dict = {}
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        out = stack.kubectl("get", "tj", "shapes", "-n", NAMESPACE, check=False).stdout.splitlines()
        if len(out) == 2:
            row = table_row(*out)
            shown = [row.get(k) for k in ("PHASE", "EPOCH", "MAP50-95", "BEST")]
            if shown != last:  # like -w: a line per change
                if last is None:
                    print(out[0])
                print(out[1], flush=True)
                last = shown
        status = stack.get("tj", "shapes", "-n", NAMESPACE).get("status", {})
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    else:
        print("the TrainingJob did not finish in 15 minutes", file=sys.stderr)
        return 1
    return summary(stack, status, time.monotonic() - t0)


def summary(stack: Stack, status: dict, elapsed: float) -> int:
    phase = status.get("phase")
    art = status.get("artifacts", {})
    prog = status.get("progress", {})
    metrics = prog.get("metrics") or {}
    step(f"TrainingJob {NAMESPACE}/shapes: {phase} in {elapsed:.0f}s")
    if phase != "Succeeded":
        for c in status.get("conditions", []):
            print(f"  {c['type']}={c['status']} {c['reason']}: {c.get('message', '')}")
        return 1
    print(f"  epochs       {prog.get('epoch')}/{prog.get('epochs')}")
    print(
        f"  mAP50-95     {metrics.get('map50-95')}   (best {prog.get('bestMap50-95')} at epoch {prog.get('bestEpoch')})"
    )
    print(
        f"  mAP50        {metrics.get('map50')}   precision {metrics.get('precision')}   recall {metrics.get('recall')}"
    )
    print(f"  best weights {art.get('bestWeights')}")
    print(f"  last weights {art.get('lastWeights')}")
    print(f"  metrics      {art.get('metrics')}")
    print(f"  results      {art.get('results')}")
    print(f"  plots        {art.get('plots')}")
    s3 = testbed.s3_env()
    print("\nFetch them with any S3 client, e.g.:")
    print(
        f"  set -a; . .testbed/s3.env; set +a; .venv/bin/s5cmd --endpoint-url {s3.endpoint} ls "
        f"'s3://{BUCKET}/runs/{NAMESPACE}/shapes/*'"
    )
    print(
        "The bed keeps running: kubectl --kubeconfig .testbed/kubeconfig get tj -A; stop it with make testbed-down"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
