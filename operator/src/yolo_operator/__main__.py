"""``python -m yolo_operator`` / ``yolo-operator``: runs the kopf operator.

Configuration comes from the environment (see yolo_operator.config): YOLO_OPERATOR_TRAINER_IMAGE,
YOLO_OPERATOR_NAMESPACES (comma list; empty = cluster-wide), YOLO_OPERATOR_LOG_LEVEL,
YOLO_OPERATOR_METRICS_PORT (Prometheus /metrics), YOLO_OPERATOR_HEALTH_PORT (/healthz);
YOLO_OPERATOR_WATCH_GRACE_SECONDS: how long /healthz tolerates unreachable watches (yolo_operator.health).
"""

from __future__ import annotations

import logging
import sys

# kopf imports the `kubernetes` package whenever it is installed (to recognise its models): ~40 MiB of memory
# the operator never uses. It talks to the API server through yolo_operator.kube, and kopf then logs in with
# its own kubeconfig/ServiceAccount readers. Kept out even where it is installed (the test environment).
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

import kopf  # noqa: E402

from yolo_operator.config import OperatorConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    config = OperatorConfig.from_env()
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from yolo_operator import handlers, health  # noqa: F401  (registers the handlers and the /healthz probe)

    liveness = f"http://{config.bind_address}:{config.health_port}/healthz" if config.health_port else None
    kopf.run(
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        liveness_endpoint=liveness,
        standalone=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
