"""What the operator and the built-in trainer must read alike, modelled once.

- :mod:`.durations`: the one duration grammar of the CRDs and the trainer's configuration.
- :mod:`.reader`: reads typed fields out of decoded YAML or JSON, collecting every problem with its path.
- :mod:`.training`: the built-in trainer's settings (``spec.model``, ``spec.training.builtin``,
  ``spec.promotion``), their parser, and the document the operator writes into the training Job.

The operator reads these from a RetrainPolicy and the trainer from its Job's environment; one package
for both keeps the two readings from drifting apart, and a test round-trips every example policy
through the Job. It is pure (no I/O, no kopf, no Kubernetes client) and imports neither the
operator's layers nor the trainer, so the trainer stays importable without the operator.
"""
