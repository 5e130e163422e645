"""What the operator and the built-in trainer must read alike: durations, and later the trainer's settings.

The operator reads these from a RetrainPolicy and the trainer from its Job's environment; one module
for both keeps the two readings from drifting apart. It is pure (no I/O, no kopf, no Kubernetes
client) and imports neither the operator's layers nor the trainer, so the trainer stays importable
without the operator.
"""
