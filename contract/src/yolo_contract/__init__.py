"""The operator/trainer contract, declared once and imported by both sides.

What lives here is what both the operator (``yolo_operator``) and the trainer pod (``yolo_trainer``) must
agree on: the training spec and its hyperparameter table (:mod:`.training`, :mod:`.hyperparameters`), the
worker and ``/dev/shm`` sizing (:mod:`.sizing`), the configuration the pod receives
(:mod:`.trainer_config`) with its typed starting model (:mod:`.model_source`) and export formats
(:mod:`.exports`), its exit codes (:mod:`.exitcodes`) and the status it reports (:mod:`.progress`).

Only pydantic and PyYAML are imported here (the operator image has no torch or ultralytics).
"""

GROUP = "yolo-operator.io"
VERSION = "v1alpha1"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
API_VERSION = f"{GROUP}/{VERSION}"

#: metadata.name of a TrainingJob is a label value (yolo-operator.io/training-job) on every child object.
MAX_NAME = 63
