"""The reconciler: the snapshot of one TrainingJob (decide.Snapshot), the pure decision (decide), the children
it builds (build), the status it derives (derive), Kueue (kueue), and act, the only code that writes to the API
server. Nothing here imports kopf."""
