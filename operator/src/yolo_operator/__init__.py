"""yolo-operator: the TrainingJob API and the kopf operator that runs it."""

from yolo_contract import GROUP, KIND, PLURAL, VERSION

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION"]
