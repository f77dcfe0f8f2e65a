# rollback-bot: the Slack app and its runner in one process (see README, "The image").
#
# BASE is the official Python image pinned by digest: python:3.11-slim-bookworm (Python
# 3.11.16) as docker-library/repo-info recorded it on 25 Aug 2026
# (repos/python/remote/3.11-slim-bookworm.md, the multi-platform index digest). Bump tag and
# digest together, deliberately. Where Docker Hub is out of reach, any Debian bookworm with
# Python 3.11, python3-venv and apt works unchanged; tools/build-test-base makes one from
# Debian's packages (the tests build on it):
#   docker build --network host --build-arg BASE=rollback-bot-base:local -t rollback-bot .
ARG BASE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

FROM ${BASE} AS build
# The index pip downloads from (a mirror or proxy of PyPI); the hashes are checked either way.
# Only this stage sees it, so no credentials in it reach the final image.
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Every dependency pinned with its hashes (tools/lock-image-requirements writes the file);
# anything missing from it or with another hash fails the build.
COPY tools/image-requirements.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r image-requirements.txt
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY actions ./actions
COPY sandbox ./sandbox
# The bot itself, with the pinned setuptools installed above and no dependency from elsewhere.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/venv/bin/pip check

FROM ${BASE}
# pg_dump/pg_restore for the database target's pre-rollback backup and restore (Debian's
# PostgreSQL client of the base's release).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin rollback \
    && mkdir -p /app /etc/rollback-bot && chown 10001:10001 /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROLLBACK_CONFIG=/etc/rollback-bot/rollback.yml \
    LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Liveness only: /readyz (database, schema, runner heartbeat) is for the orchestrator.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# SIGTERM stops cleanly (bot/app.py BotProcess.stop); exec form so the bot gets the signal.
STOPSIGNAL SIGTERM
ENTRYPOINT ["rollback-bot"]
CMD ["serve", "--http", "0.0.0.0:8080"]
