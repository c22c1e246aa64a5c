# syntax=docker/dockerfile:1
# The compose stack's traffic app: tollmeter's instrumentation and the OpenAI and
# Anthropic SDKs, no collector dependencies. Built with the repository root as context.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY semconv ./semconv
COPY instrumentation ./instrumentation
COPY collector ./collector
RUN python -m venv /opt/app \
    && /opt/app/bin/pip install --no-cache-dir . "openai>=1.50" "anthropic>=0.40"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --no-create-home \
        --shell /usr/sbin/nologin app
COPY --from=build /opt/app /opt/app
COPY examples/compose/traffic.py /app/traffic.py
ENV PATH=/opt/app/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /app
ENTRYPOINT ["python", "traffic.py"]
