# syntax=docker/dockerfile:1
# idgraph worker image: `docker build -t idgraph .`, then `docker run idgraph --help`.
# Two stages: the first builds a virtualenv (with compilers at hand for any dependency that
# ships no wheel), the second copies only that virtualenv onto a slim base and runs as a
# non-root user.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/idgraph
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so editing the code does not re-download them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/idgraph/bin/pip install -r /tmp/requirements.txt
COPY . .
RUN /opt/idgraph/bin/pip install --no-deps . \
 && /opt/idgraph/bin/idgraph --help > /dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="idgraph" \
      org.opencontainers.image.description="Real-time customer identity graph worker"
RUN groupadd --system --gid 10001 idgraph \
 && useradd --system --uid 10001 --gid idgraph --home-dir /var/lib/idgraph --create-home --shell /usr/sbin/nologin idgraph
COPY --from=build /opt/idgraph /opt/idgraph
ENV PATH=/opt/idgraph/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IDGRAPH_DATA_DIR=/var/lib/idgraph
USER idgraph:idgraph
WORKDIR /var/lib/idgraph
# Prometheus metrics (IDGRAPH_METRICS_PORT).
EXPOSE 18100
ENTRYPOINT ["idgraph"]
CMD ["worker"]
