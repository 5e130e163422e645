"""The built-in trainer: what runs inside a training Job when a policy uses ``spec.training.builtin``.

It reads CSV or Parquet data from S3-compatible storage, fits a scikit-learn estimator inside a
preprocessing Pipeline, scores it on a holdout, writes the model and its metadata to the registry
(:mod:`retrain_operator.registry`) and reports the outcome in the container's termination message.
Entry point: :func:`retrain_operator.trainer.main.main`.

It shares only the registry layout with the operator and imports neither kopf nor the Kubernetes
client, so the Job needs no cluster access. Comparison with the current champion and promotion are
not done here yet.
"""
