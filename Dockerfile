# coordwatch workers (and every other coordwatch command): `docker build -t coordwatch .`
# Slim, non-root, dependencies pinned by deploy/requirements.lock (regenerate it with
# `python deploy/lock_requirements.py > deploy/requirements.lock`), the project installed
# with --no-deps on top. Configuration: COORDWATCH_<SECTION>__<KEY> environment variables
# (docs/config.md). Operations guide: docs/operations.md.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/coordwatch
ENV PATH=/opt/coordwatch/bin:$PATH
COPY deploy/requirements.lock /tmp/requirements.lock
RUN pip install --require-virtualenv -r /tmp/requirements.lock \
    && pip install --require-virtualenv setuptools==80.9.0 wheel==0.45.1
COPY pyproject.toml README.md /src/
COPY streams /src/streams
COPY detectors /src/detectors
COPY sketches /src/sketches
RUN pip install --require-virtualenv --no-deps --no-build-isolation /src \
    && pip uninstall --yes setuptools wheel \
    && pip check

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/coordwatch --create-home \
        --shell /usr/sbin/nologin coordwatch \
    && mkdir -p /var/lib/coordwatch/data /var/lib/coordwatch/demo \
    && chown -R coordwatch:coordwatch /var/lib/coordwatch
COPY --from=build /opt/coordwatch /opt/coordwatch
COPY deploy/init_topics.py /opt/coordwatch/deploy/init_topics.py
# The worker serves Prometheus metrics on kafka.web_host:kafka.web_port: all interfaces
# and one fixed port in a container (Prometheus scrapes it, the health check fetches it).
ENV PATH=/opt/coordwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    COORDWATCH_KAFKA__WEB_HOST=0.0.0.0 \
    COORDWATCH_KAFKA__WEB_PORT=9100 \
    COORDWATCH_KAFKA__DATA_DIR=/var/lib/coordwatch/data \
    COORDWATCH_REPLAY__PROGRESS=false
USER coordwatch
WORKDIR /var/lib/coordwatch
EXPOSE 9100
# For `worker` (the default command); services running other commands disable it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ['COORDWATCH_KAFKA__WEB_PORT'], timeout=4)"]
ENTRYPOINT ["coordwatch"]
CMD ["worker"]
