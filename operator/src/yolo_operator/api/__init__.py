"""The TrainingJob API: its types (the pydantic models that generate the CRD, with their rules beside the
fields) and the condition reasons."""
