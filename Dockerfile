# charbot as a container: `docker build -t charbot .`, then compose.yaml, or
#   docker run -d --init --name charbot --env-file .env -v charbot-data:/data charbot
# The final image holds Python, the virtual environment and nothing to build with.

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: the dependencies, then the package, in a virtual environment --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/charbot
WORKDIR /src
# The dependencies (TensorFlow: hundreds of MB) get a layer of their own, read from
# pyproject.toml, so that a change to the code alone does not download them again.
# Every one has a wheel for Linux x86-64 and arm64: no compiler is needed here either.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" \
        > /tmp/requirements.txt \
    && /opt/charbot/bin/pip install -r /tmp/requirements.txt
COPY bot ./bot
COPY model ./model
COPY storage ./storage
# pip check: the layer above installed everything the package asks for.
RUN /opt/charbot/bin/pip install --no-deps . \
    && /opt/charbot/bin/pip check

# -- run: the environment alone, as an unprivileged user --------------------------------
FROM ${PYTHON_IMAGE}
# A fixed uid, so that a bind-mounted data dir can be given to it: chown 10001 DIR.
RUN groupadd --system --gid 10001 charbot \
    && useradd --system --uid 10001 --gid charbot --create-home --home-dir /home/charbot \
        --shell /usr/sbin/nologin charbot \
    && install -d -o charbot -g charbot -m 0750 /data
COPY --from=build /opt/charbot /opt/charbot
# TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's native code logs errors only.
# CHARBOT_METRICS_ADDRESS: /metrics and /healthz on the container's loopback, which the
# HEALTHCHECK reaches; compose.yaml opens it to the compose network.
ENV PATH=/opt/charbot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    CHARBOT_DATA_DIR=/data \
    CHARBOT_METRICS_ADDRESS=9100
USER 10001:10001
WORKDIR /data
# The database (SQLite by default), the model versions and the logs: keep this volume.
VOLUME ["/data"]
EXPOSE 9100
# SIGTERM: replies in flight are sent and a retraining child is stopped before exit;
# give it time (docker stop -t 60, compose's stop_grace_period).
STOPSIGNAL SIGTERM
# Healthy while the bot's /healthz answers 200 (bot/metrics.py). The host of
# CHARBOT_METRICS_ADDRESS is 127.0.0.1 when it is a bare port; a wildcard one is
# reached on the loopback. python: the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=10s --start-period=3m --retries=3 \
    CMD ["python", "-c", "import http.client, os, sys; \
host, _, port = os.environ['CHARBOT_METRICS_ADDRESS'].rpartition(':'); host = host.strip('[]'); \
host = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(host, host); \
c = http.client.HTTPConnection(host, int(port), timeout=5); c.request('GET', '/healthz'); \
sys.exit(c.getresponse().status != 200)"]
ENTRYPOINT ["charbot"]
CMD ["run"]
