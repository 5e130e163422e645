"""The built-in trainer: what runs inside a training Job when a policy uses ``spec.training.builtin``.

It reads CSV or Parquet data (one object, or every partition under a prefix) from S3-compatible
storage, fits a scikit-learn estimator inside a preprocessing Pipeline, scores it and the current
champion on the same holdout, writes the model (skops), reference histograms and metadata to the
registry (:mod:`retrain_operator.registry`), moves the champion pointer if the quality gate passes,
and reports the outcome in the container's termination message. ``promote --version V`` moves the
pointer to an earlier or candidate version. Entry point: :func:`retrain_operator.trainer.main.main`.

It shares only the registry layout and the settings model (:mod:`retrain_operator.settings`, the
same reading of the policy's training settings) with the operator, and imports neither kopf nor the
Kubernetes client, so the Job needs no cluster access.
"""
