"""``python -m yolo_operator`` / ``yolo-operator``: runs the kopf operator.

Configuration comes from the environment (see yolo_operator.runtime.config): YOLO_OPERATOR_TRAINER_IMAGE,
YOLO_OPERATOR_NAMESPACES (comma list; empty = cluster-wide), YOLO_OPERATOR_LOG_LEVEL,
YOLO_OPERATOR_METRICS_PORT (Prometheus /metrics), YOLO_OPERATOR_HEALTH_PORT (/healthz);
YOLO_OPERATOR_WATCH_GRACE_SECONDS: how long /healthz tolerates unreachable watches (yolo_operator.runtime.health).
YOLO_OPERATOR_LEADER_ELECTION=true: one of several replicas; only the Lease holder reconciles
(yolo_operator.runtime.leader; the Lease's namespace, name and
durations: YOLO_OPERATOR_LEADER_ELECTION_NAMESPACE, _ID, YOLO_OPERATOR_LEASE_*).
"""

from __future__ import annotations

import logging
import sys

# kopf imports the `kubernetes` package whenever it is installed (to recognise its models): ~40 MiB of memory
# the operator never uses. It talks to the API server through yolo_operator.runtime.kube, and kopf then logs in with
# its own kubeconfig/ServiceAccount readers. Kept out even where it is installed (the test environment).
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

import kopf  # noqa: E402

from yolo_operator.runtime.config import OperatorConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    config = OperatorConfig.from_env()
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.leader_election:
        config.lease_namespace()  # fails now, naming the setting, rather than in kopf's startup handler
    from yolo_operator.runtime import health, wiring  # noqa: F401  (registers the handlers and the /healthz probe)

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
