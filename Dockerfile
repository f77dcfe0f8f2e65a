# rollback-bot: the Slack app and its runner in one process (see README, "Running it").
# Base pinned by version; bump it deliberately. Build: docker build -t rollback-bot .
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY actions ./actions
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.11.11-slim-bookworm
# pg_dump/pg_restore for the database target's pre-rollback backup and restore.
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
