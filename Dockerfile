# soundwatch in a container: `soundwatch serve` (HTTP scoring and the dashboard) by
# default, `soundwatch monitor` or any other command by changing the arguments.
# See docs/deploy.md. Build from the repository root:
#
#   docker build -t soundwatch .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/models:/models:ro" -v soundwatch-data:/data \
#       soundwatch serve --host 0.0.0.0 --model slider=/models/slider.safetensors --db /data/events.db
FROM python:3.11-slim-bookworm

# soundwatch never needs a GPU: the CPU build of torch keeps the image small.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    SOUNDWATCH_CACHE=off

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY soundwatch ./soundwatch
RUN pip install ".[serve]" && rm -rf /src

# An unprivileged user; scores, alerts and any feature cache live under /data.
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin soundwatch \
    && mkdir -p /data && chown soundwatch:soundwatch /data
USER soundwatch
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

# For `serve` on the default port; run `monitor` with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"

ENTRYPOINT ["soundwatch"]
CMD ["--help"]
