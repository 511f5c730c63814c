# One Dockerfile for the three services, built from the repository root so the shared package
# `kubejob` is copied in beside the service:
#   docker build --build-arg SERVICE=producer -t producer:latest .   (likewise worker, scaler)
# BASE is any image with Python 3.11 and pip on PATH: the official one by default; on a daemon
# that cannot pull, infra/local-cluster/images.sh passes one made with debootstrap.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG SERVICE
# Bytecode is not written because the root filesystem is read-only in the cluster.
ENV SERVICE=${SERVICE} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Requirements first, so a code change reuses the installed packages' layer.
COPY kubejob/requirements.txt kubejob/
COPY ${SERVICE}/requirements.txt ${SERVICE}/
RUN pip install -r ${SERVICE}/requirements.txt

COPY kubejob kubejob
COPY ${SERVICE} ${SERVICE}

# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
USER 10001

# exec, so the service is PID 1 and gets the pod's SIGTERM itself.
CMD ["sh", "-c", "exec python -m \"$SERVICE\""]
