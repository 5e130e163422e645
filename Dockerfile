# syntax=docker/dockerfile:1
#
# One image, two entrypoints of the `retrain-operator` console script:
#   retrain-operator run     the operator (the default command)
#   retrain-operator train   the built-in trainer (the training Job's command)
#
# Runs as the non-root user 65532 with a read-only root filesystem: HOME and TMPDIR are /tmp, which
# the chart and the training Jobs mount as an emptyDir. Build and push: docs/install.md.
#
# The base is pinned to a patch release. For reproducible builds pin it by digest as well:
#   docker buildx imagetools inspect python:3.11.11-slim-bookworm     # prints "Digest: sha256:..."
#   docker build --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# Build: the project's wheel, installed with its dependencies into a virtualenv.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/retrain-operator \
 && /opt/retrain-operator/bin/pip install --only-binary=:all: /wheels/*.whl \
 && /opt/retrain-operator/bin/pip uninstall --yes pip setuptools

# Runtime: the same base, the virtualenv, no build tools, no pip.
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="retrain-operator" \
      org.opencontainers.image.description="Retrains machine-learning models when it pays off: the operator and the built-in trainer." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
RUN python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /opt/retrain-operator /opt/retrain-operator
ENV PATH=/opt/retrain-operator/bin:/usr/local/bin:/usr/bin:/bin \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["retrain-operator"]
CMD ["run"]
