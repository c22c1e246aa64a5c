# syntax=docker/dockerfile:1
# The tollmeter collector: OTLP/gRPC on 4317, OTLP/HTTP on 4318, management API
# (/healthz, /metrics, /api/v1/*) on 4319. The same image runs `tollmeter fake-llm`.
#
#   docker build -t tollmeter .
#   docker run -p 127.0.0.1:4317-4319:4317-4319 -e TOLLMETER_INGEST_KEYS=... tollmeter
#
# See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY semconv ./semconv
COPY instrumentation ./instrumentation
COPY collector ./collector
COPY testing ./testing
RUN python -m venv /opt/tollmeter \
    && /opt/tollmeter/bin/pip install --no-cache-dir ".[collector,postgres,redis]"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 tollmeter \
    && useradd --system --no-log-init --uid 10001 --gid tollmeter \
        --home-dir /var/lib/tollmeter --create-home --shell /usr/sbin/nologin tollmeter
COPY --from=build /opt/tollmeter /opt/tollmeter
# The collector listens on loopback by default; inside a container it must listen
# on every interface. These variables take precedence over a configuration file.
ENV PATH=/opt/tollmeter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOLLMETER_GRPC_ENDPOINT=0.0.0.0:4317 \
    TOLLMETER_HTTP_ENDPOINT=0.0.0.0:4318 \
    TOLLMETER_MANAGEMENT_ENDPOINT=0.0.0.0:4319 \
    TOLLMETER_DATA_DIR=/var/lib/tollmeter/data
USER 10001:10001
WORKDIR /var/lib/tollmeter
VOLUME ["/var/lib/tollmeter"]
EXPOSE 4317 4318 4319
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:4319/healthz', timeout=3).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tollmeter"]
CMD ["collector"]
