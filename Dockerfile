# The xiaozhi image: the `xiaozhi` console script and nothing else. Each compose.yaml service
# picks its sub-command (`edge`, `hub`, `sim fleet ...`); the broker is the eclipse-mosquitto
# image. `xiaozhi up` is not for containers: its managed broker wants a source checkout
# (docs/operations.md).
#
#   docker build -t xiaozhi-hub:0.1.0 .
#   docker run --rm -p 8003:8003 -e XIAOZHI_MQTT_URL=mqtt://broker:1883 xiaozhi-hub:0.1.0 hub

FROM python:3.11-slim-bookworm

# libopus0: the edge decodes and the simulator encodes Opus (opuslib loads it with ctypes).
# espeak-ng, flite: the speech package's voices (espeak-ng also phonemises unknown words).
# mosquitto-clients: mosquitto_sub/mosquitto_pub, to watch the topic tree from a container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopus0 mosquitto-clients espeak-ng flite \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, in their own layer: a code change does not download them again.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The packages of pyproject.toml's package-dir, installed as a regular (non-editable) wheel;
# package-data carries hub/*.yaml and firmware-sim/scenarios/*.yaml along.
COPY xiaozhi ./xiaozhi
COPY edge ./edge
COPY hub ./hub
COPY firmware-sim ./firmware-sim
COPY cli ./cli
COPY runtime ./runtime
COPY bench ./bench
COPY speech ./speech
RUN pip install --no-cache-dir . \
    && cd / && rm -rf /src

# A non-root user; its home is the state dir (the hub's secret and token key live there);
# /var/lib/xiaozhi-keys holds the public key compose shares with the edges.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/xiaozhi --shell /usr/sbin/nologin xiaozhi \
    && mkdir -p /var/lib/xiaozhi /var/lib/xiaozhi-keys \
    && chown xiaozhi:xiaozhi /var/lib/xiaozhi /var/lib/xiaozhi-keys
ENV XIAOZHI_STATE_DIR=/var/lib/xiaozhi
WORKDIR /var/lib/xiaozhi
USER xiaozhi

# 8000: edge (device WebSockets, /health, /stats, /metrics); 8003: hub (REST, OTA setup,
# dashboard, /health, /metrics).
EXPOSE 8000 8003

ENTRYPOINT ["xiaozhi"]
CMD ["--help"]
