"""Process settings: tokens, database URL, config path. Built once at start-up, passed down.

Nothing reads the environment at import time; `Settings()` does, when the
command line builds it. Tokens are `SecretStr`, so printing the settings or an
error that includes them shows `**********`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the process needs from its environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    slack_bot_token: SecretStr = SecretStr("")
    slack_signing_secret: SecretStr = SecretStr("")
    slack_app_token: SecretStr = SecretStr("")
    slack_api_url: str = "https://slack.com/api/"
    alert_webhook_token: SecretStr = SecretStr("")
    guard_api_token: SecretStr = SecretStr("")
    """Bearer token of the regression guard's GET /v1/targets/…; empty: the API answers 404."""
    database_url: str = "sqlite:///rollback-bot.db"
    rollback_config: str = "rollback.yml"
    runner_lease_seconds: float = Field(default=30.0, gt=0)
    runner_poll_seconds: float = Field(default=1.0, gt=0)
    # The Slack Web API client's retries (rate limits, server errors, dropped connections)
    # wait backoff * 2^attempt plus up to `jitter` random seconds: slack_sdk's own defaults.
    slack_retry_backoff_seconds: float = Field(default=0.5, ge=0)
    slack_retry_jitter_seconds: float = Field(default=1.0, ge=0)
    # The HTTP server (bot/server.py): worker threads, open connections, request limits.
    http_threads: int = Field(default=8, ge=1, le=256)
    http_connection_limit: int = Field(default=1000, ge=10)
    http_max_body_bytes: int = Field(default=1_000_000, ge=1024)
    http_idle_seconds: float = Field(default=30.0, gt=0)
    # What listeners do after the ack (Slack/Kubernetes calls) runs on a pool of its own.
    work_threads: int = Field(default=8, ge=1, le=256)
    work_queue: int = Field(default=256, ge=1)
    # Work not started this long after its ack never runs (the person is told so); work, or
    # the runner loop, stuck longer than `work_stuck_seconds` fails /healthz (a restart).
    work_deadline_seconds: float = Field(default=20.0, gt=0)
    work_stuck_seconds: float = Field(default=300.0, gt=0)
    # On SIGTERM: how long in-flight requests and the current step get to finish.
    shutdown_seconds: float = Field(default=20.0, gt=0)
    # /readyz fails when the runner loop has not completed a pass for this long.
    ready_beat_seconds: float = Field(default=120.0, gt=0)
    # Logs on standard error: "text" for people, "json" (one object a line) for a pipeline.
    log_format: Literal["text", "json"] = "text"
