"""yolo-operator: the TrainingJob API and the kopf operator that runs it."""

GROUP = "yolo-operator.io"
VERSION = "v1alpha1"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
