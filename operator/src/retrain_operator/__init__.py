"""retrain-operator: retrain machine-learning models when it pays off, and explain every decision.

The package is layered; each layer imports only the ones below it (checked by import-linter):

- ``handlers``: kopf decorators, thin.
- ``reconcile``: the scheduler and the per-policy reconciliation (observe, decide, act, one status write).
- ``adapters``: I/O behind small interfaces (Kubernetes, Prometheus), each with a fake.
- ``domain``: pure API types, validation, triggers, decisions, status and Job building.
- ``settings``: pure, what the operator and the trainer read alike (durations, the trainer's settings).

``trainer`` is what runs inside the training Job; it shares ``registry`` and ``settings`` with the operator.
"""

__version__ = "0.1.0"
