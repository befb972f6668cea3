# The Outlast worker image: `outlast worker TARGET... [flags]` on Kubernetes, ECS/Fargate,
# Cloud Run and EC2. The image holds the runtime only; agents come from a derived image:
#
#   FROM outlast-worker:0.1.0
#   COPY --chown=10001:10001 myagents/ /app/myagents/
#   CMD ["myagents.support:app", "--grace", "110"]
#
# Base images are pinned by tag; a release pipeline should pin them by digest as well
# (python:3.13-slim-bookworm@sha256:...).

FROM python:3.13-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A virtualenv copies cleanly into the runtime stage and leaves build leftovers behind.
RUN python -m venv /opt/outlast

WORKDIR /src
COPY pyproject.toml README.md ./
COPY statestore/ statestore/
COPY outlast/ outlast/
RUN /opt/outlast/bin/pip install --no-cache-dir .


FROM python:3.13-slim-bookworm

# tini runs as PID 1: the kernel drops signals that PID 1 has no handler for, and a process that
# forks (tools, subprocesses of steps) needs someone to reap its zombies. tini forwards SIGTERM to
# the worker, which drains, and exits with the worker's status.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 outlast \
    && useradd --system --uid 10001 --gid outlast --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin outlast

COPY --from=build /opt/outlast /opt/outlast

# No .pyc writes (the root filesystem is read-only in the manifests), unbuffered logs so the last
# lines before an exit reach the platform, and /app importable for agent modules.
ENV PATH=/opt/outlast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app

WORKDIR /app
USER 10001:10001

# The worker serves GET /healthz here: 200 while it takes runs, 503 once it drains.
EXPOSE 8080

# What every platform sends; named so a base-image change cannot silently alter it.
STOPSIGNAL SIGTERM

# Exec form: tini is PID 1 and the worker its direct child, with no shell in between to swallow
# the signal. Platform probes (Kubernetes readinessProbe, the ECS healthCheck) watch /healthz, so
# the image declares no HEALTHCHECK of its own.
ENTRYPOINT ["/usr/bin/tini", "--", "outlast", "worker"]
CMD ["--help"]
