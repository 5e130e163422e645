"""The model registry: how versions of a model are laid out in S3-compatible storage.

Only the key layout lives here (pure, no storage client), so the operator can name objects without the
trainer's dependencies and the trainer cannot drift from what the operator reads.
"""

from retrain_operator.registry.layout import (
    METADATA_FILENAME,
    METADATA_SCHEMA_VERSION,
    MODEL_FILENAMES,
    VERSIONS_DIR,
    ModelFormat,
    check_prefix,
    check_version_id,
    metadata_key,
    model_key,
    new_version_id,
    parse_s3_uri,
    s3_uri,
    version_of_key,
    version_prefix,
    version_time,
    versions_prefix,
)

__all__ = [
    "METADATA_FILENAME",
    "METADATA_SCHEMA_VERSION",
    "MODEL_FILENAMES",
    "VERSIONS_DIR",
    "ModelFormat",
    "check_prefix",
    "check_version_id",
    "metadata_key",
    "model_key",
    "new_version_id",
    "parse_s3_uri",
    "s3_uri",
    "version_of_key",
    "version_prefix",
    "version_time",
    "versions_prefix",
]
