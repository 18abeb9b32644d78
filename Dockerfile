# Arbiter's images. Targets:
#   serve     the ONNX serving image: no torch, no compilers, non-root, tini as PID 1 (the default target)
#   bundled   serve with bundles/default baked in (build it with `make bundle` first)
#   train     serve plus CPU torch and the training extras: `arbiter train`, and the local LLM judge
# Bundles arrive on the /bundles volume (or baked in); the preference store and reward state live on /data.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/arbiter
WORKDIR /src
COPY pyproject.toml README.md ./
COPY arbiter/ arbiter/
COPY bundle/ bundle/
COPY training/ training/
COPY data/ data/
COPY service/ service/
COPY clients/ clients/
COPY judge/ judge/
COPY rewards/ rewards/
COPY annotation/ annotation/
COPY verifiers/ verifiers/
COPY sandbox/ sandbox/
RUN /opt/arbiter/bin/pip install ".[serve]"

FROM ${BASE_IMAGE} AS serve
ARG TINI_VERSION=0.19.0-1+b3
RUN apt-get update \
    && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --home-dir /home/arbiter --create-home --shell /usr/sbin/nologin arbiter \
    && mkdir -p /bundles /data \
    && chown arbiter:arbiter /data
COPY --from=build /opt/arbiter /opt/arbiter
ENV PATH=/opt/arbiter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ARBITER_HOST=0.0.0.0 \
    ARBITER_BUNDLES='["/bundles/default"]' \
    ARBITER_ANNOTATION_DB=sqlite:////data/annotations.sqlite \
    ARBITER_REWARD_STATE_PATH=/data/reward-state.sqlite \
    ARBITER_JUDGE_BACKEND=off
USER 10001
WORKDIR /home/arbiter
VOLUME ["/bundles", "/data"]
EXPOSE 8000 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "arbiter", "serve"]

FROM serve AS bundled
COPY --chown=10001:10001 bundles/default /bundles/default

FROM serve AS train
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
USER 0
COPY --from=build /src /src
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip install --no-cache-dir "/src[train]" \
    && rm -rf /src
ENV ARBITER_JUDGE_BACKEND=local
USER 10001
