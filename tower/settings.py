"""Every environment variable tower reads, with defaults and range clamping.

Settings are read once, at start, and passed in; services never import a global.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

WEBHOOK_SECRET_PREFIX = "whsec_"
MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

# name -> (low, high): values outside are clamped with a warning, not rejected,
# so an operator's typo degrades gracefully instead of stopping the service.
RANGES: dict[str, tuple[float, float]] = {
    "tower_port": (1, 65535),
    "max_concurrent_jobs": (0, 256),
    "pool_min": (0, 256),
    "pool_size": (0, 256),
    "pool_max": (0, 1024),
    "pool_idle_seconds": (1, 86400),
    "pool_create_concurrency": (1, 64),
    "pool_check_interval": (1, 3600),
    "pool_max_idle": (10, 86400),
    "worker_timeout_seconds": (1, 86400),
    "worker_cpu_limit": (0.1, 64),
    "worker_max_timeout_seconds": (1, 86400),
    "worker_max_cpus": (0.1, 64),
    "worker_pids_limit": (16, 65536),
    "job_ttl_hours": (1, 24 * 365),
    "max_retained_jobs": (1, 10_000_000),
    "cleanup_interval": (1, 86400),
    "max_result_size": (1024, 1 << 30),
    "max_request_bytes": (1 << 20, 1 << 34),
    "max_upload_bytes": (1 << 20, 1 << 36),
    "max_artifact_bytes": (0, 1 << 36),
    "upload_ttl_hours": (1, 24 * 30),
    "session_ttl_hours": (1, 24 * 90),
    "repo_clone_timeout_seconds": (1, 3600),
    "webhook_timeout": (1, 300),
    "webhook_max_attempts": (1, 50),
    "webhook_retry_base": (0.01, 3600),
    "webhook_retry_max": (0.01, 86400),
    "webhook_concurrency": (1, 256),
    "lease_seconds": (1, 3600),
    "poll_interval": (0.05, 60),
    "max_attempts": (1, 20),
    "idempotency_ttl_hours": (1, 24 * 30),
    "db_pool_size": (2, 100),
    "gateway_auth_cache_seconds": (0, 60),
    "egress_max_bytes": (1 << 20, 1 << 40),
    "egress_max_connections": (1, 1024),
    "egress_auth_cache_seconds": (0, 60),
    "max_log_bytes": (1024, 1 << 30),
    "events_keepalive_seconds": (1, 300),
    "max_streams": (1, 100_000),
    "max_streams_per_key": (1, 100_000),
    "header_read_timeout_seconds": (1, 300),
    "shutdown_grace_seconds": (0, 86400),
    "tenant_max_running": (0, 10_000_000),
    "tenant_submits_per_minute": (0, 10_000_000),
    "tenant_spend_per_day_usd": (0, 1_000_000_000),
    "tenant_spend_per_month_usd": (0, 1_000_000_000),
    "tenant_max_queued": (0, 10_000_000),
    "tenant_share": (0.001, 1000),
}


class Settings(BaseSettings):
    # An empty variable means "the default" (compose passes unset variables as empty).
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    tower_host: str = "127.0.0.1"
    tower_port: int = 8080
    tower_api_key: SecretStr = SecretStr("")
    # Without a key, tower serves only loopback unless this says the operator means it
    # (`parpaing serve --insecure-no-auth` sets it too).
    insecure_no_auth: bool = False
    # Host header values tower answers to, comma-separated ("*" for any). Empty: any when a
    # key is set; only loopback names (localhost, 127.0.0.1, ::1) when keyless, so a page
    # using DNS rebinding cannot reach a keyless tower.
    allowed_hosts: str = ""
    tower_id: str = ""
    database_url: str = ""
    state_dir: str = ""
    # Jobs one replica runs at once; 0: fitted to the machine tower runs on, from its cores,
    # its memory and the profiles' memory limits (tower/queue/capacity.py), stated at start
    # and in /health.
    max_concurrent_jobs: int = 0
    # The warm pool (docs/execution.md, "An elastic pool"): at least POOL_MIN ready workers
    # (POOL_SIZE is its older name), at most POOL_MAX (unset: fitted to the Docker host's
    # memory). It grows to the queued and running jobs it sees, and gives back what it grew
    # once demand has stayed lower for POOL_IDLE_SECONDS. POOL_CREATE_CONCURRENCY bounds
    # the creations under way at once, the pool's and the jobs' own.
    pool_min: int = 2
    # POOL_MIN's older name, read when POOL_MIN is not given.
    pool_size: int | None = None
    pool_max: int | None = None
    pool_idle_seconds: float = 300.0
    pool_create_concurrency: int = 4
    pool_check_interval: int = 30
    pool_max_idle: int = 3600
    # The last replica on a Docker host to stop removes the idle warm containers (compose
    # sets it, so `docker compose down` leaves no worker behind).
    pool_drain_on_last_stop: bool = False
    worker_image: str = "parpaing-worker:latest"
    worker_timeout_seconds: int = 1800
    worker_mem_limit: str = "2g"
    worker_cpu_limit: float = 2.0
    # Operator maxima: a job's memory, CPUs and time limit (its profile's or the defaults
    # above) are clamped to these, so no profile lifts a container's limits.
    worker_max_memory: str = "8g"
    worker_max_cpus: float = 4.0
    worker_max_timeout_seconds: int = 7200
    worker_runtime: str = ""
    # Names this deployment's workers on a shared Docker daemon (warm pool label, presence
    # locks). Workers have no network now; this was the name of their internal bridge.
    worker_net: str = "parpaing-workers"
    worker_pids_limit: int = 256
    worker_tmp_size: str = "512m"
    worker_workspace_size: str = "2g"
    bundle_volume_size: str = "256m"
    job_ttl_hours: int = 168
    max_retained_jobs: int = 10000
    cleanup_interval: int = 300
    max_result_size: int = 10 * 1024 * 1024
    # The largest request body tower reads (the prompt alone may be 100 MB); above it, 413.
    max_request_bytes: int = 128 * 1024 * 1024
    # POST /uploads bodies (files and archives for workspaces) may be this large instead;
    # they are spooled to a temporary file, never held in memory.
    max_upload_bytes: int = 1024 * 1024 * 1024
    # What a job created or changed in /workspace comes back as artifacts up to this many
    # bytes (its diff included); past it, files are listed as omitted. 0: no artifacts.
    max_artifact_bytes: int = 1024 * 1024 * 1024
    # An upload no job has used is deleted after this many hours.
    upload_ttl_hours: int = 24
    # A session's captured state (workspace and engine state, docs/sessions.md) can be
    # continued until this many hours after its last turn finished.
    session_ttl_hours: int = 72
    # Jobs' repositories are cloned by tower (the worker has no route out): private and
    # loopback hosts only when allowed, like webhooks; bounded in time, and in size by
    # BUNDLE_VOLUME_SIZE (the clone travels to the worker in the job's bundle).
    repo_allow_private: bool = False
    repo_clone_timeout_seconds: float = 300.0
    # Who commits a job's changes on its output branch.
    publish_author_name: str = "Parpaing"
    publish_author_email: str = "parpaing@localhost"
    webhook_timeout: int = 10
    # Standard Webhooks signing key, `whsec_<base64>` (or any other string, used as raw
    # bytes). Empty: one is generated at first start and kept in the database.
    webhook_secret: SecretStr = SecretStr("")
    webhook_allow_private: bool = False
    # Encrypts stored credentials (git and forge tokens): 32 random bytes, URL-safe base64.
    # Never stored in the database. The all-in-one tower keeps a generated one in its state
    # directory when none is set.
    secrets_key: SecretStr = SecretStr("")
    webhook_max_attempts: int = 10
    webhook_retry_base: float = 30.0
    webhook_retry_max: float = 14400.0
    webhook_concurrency: int = 8
    # Where workers reach the gateway; its host name is also the gateway's container name
    # and its alias on the workers network (unless GATEWAY_CONTAINER says otherwise).
    gateway_url: str = "http://parpaing-gateway:8080"
    gateway_container: str = ""
    # All-in-one: this tower builds, starts and updates the gateway container itself.
    # Compose runs the gateway as a service and sets this to false.
    gateway_managed: bool = True
    gateway_image: str = "parpaing-gateway:latest"
    # The gateway's way out to the providers (workers never join it).
    gateway_egress_net: str = "parpaing-egress"
    # Tower answers the gateway's token checks on a Unix socket (default: in the state
    # dir, mounted into a managed gateway) and, when set, on host:port (compose).
    gateway_auth_socket: str = ""
    # The Docker volume holding the socket workers reach the gateway through (mounted
    # read-write into the gateway, read-only into workers). Default: <gateway container>-socket.
    gateway_socket_volume: str = ""
    gateway_auth_listen: str = ""
    gateway_auth_cache_seconds: int = 1
    # Provider credentials and upstreams: handed to the managed gateway, never to a worker.
    anthropic_api_key: SecretStr = SecretStr("")
    claude_code_oauth_token: SecretStr = SecretStr("")
    openai_api_key: SecretStr = SecretStr("")
    gemini_api_key: SecretStr = SecretStr("")
    anthropic_upstream: str = "https://api.anthropic.com"
    openai_upstream: str = "https://api.openai.com"
    gemini_upstream: str = "https://generativelanguage.googleapis.com"
    # The egress proxy (docs/egress.md): what a job may reach besides the gateway, by the
    # allow-list of its profile (or its own, within EGRESS_ALLOW). Tower builds, starts
    # and updates its container; unset: as GATEWAY_MANAGED (compose runs it as a service).
    egress_managed: bool | None = None
    # Also answer the proxy's helpers on host:port (compose, where the proxy is a service
    # asking the towers over the compose network). With it, a proxy tower does not
    # manage serves the jobs: lists are accepted with EGRESS_MANAGED=false.
    egress_listen: str = ""
    egress_image: str = "parpaing-egress:latest"
    egress_container: str = "parpaing-egress"
    # The proxy's own network, to whatever allow-lists name (workers never join it).
    egress_net: str = "parpaing-egress-out"
    # The volume of the workers' socket to the proxy. Default: <egress container>-socket.
    egress_socket_volume: str = ""
    # Names the proxy resolves to given addresses, "name=address,..." (its /etc/hosts).
    egress_extra_hosts: str = ""
    # The operator's ceiling: entries (comma-separated) a job may add to its profile's.
    egress_allow: str = ""
    # Names resolving to private addresses, and IP address entries, allowed.
    egress_allow_private: bool = False
    # Per job: bytes through the proxy in total, and requests at once.
    egress_max_bytes: int = 1 << 30
    egress_max_connections: int = 16
    egress_auth_cache_seconds: int = 1
    lease_seconds: float = 30.0
    poll_interval: float = 2.0
    max_attempts: int = 1
    idempotency_ttl_hours: int = 24
    db_pool_size: int = 10
    # On SIGTERM: how long running jobs may go on finishing before they are handed back.
    shutdown_grace_seconds: float = 30.0
    tower_runner: str = "docker"
    simulated_run_log: str = ""
    max_log_bytes: int = 32 * 1024 * 1024
    events_keepalive_seconds: float = 15.0
    # Open event streams and long polls (/events, /wait): per replica, and per API key.
    max_streams: int = 1000
    max_streams_per_key: int = 500
    # A client that has not sent its request's headers within this many seconds is cut.
    header_read_timeout_seconds: float = 10.0
    # Each tenant's quotas unless PUT /tenants/{name} set its own (docs/tenants.md); 0: no
    # limit. TENANT_SHARE is a tenant's weight in fair scheduling.
    tenant_max_running: int = 0
    tenant_submits_per_minute: int = 0
    tenant_spend_per_day_usd: float = 0.0
    tenant_spend_per_month_usd: float = 0.0
    tenant_max_queued: int = 0
    tenant_share: float = 1.0

    @field_validator("webhook_secret")
    @classmethod
    def _usable_webhook_secret(cls, secret: SecretStr) -> SecretStr:
        # A malformed whsec_ secret stops the start here, naming the variable.
        if secret.get_secret_value():
            signing_key(secret.get_secret_value())
        return secret

    @field_validator("secrets_key")
    @classmethod
    def _usable_secrets_key(cls, key: SecretStr) -> SecretStr:
        if key.get_secret_value():
            secrets_key_bytes(key.get_secret_value())
        return key

    @field_validator("worker_max_memory")
    @classmethod
    def _usable_max_memory(cls, limit: str) -> str:
        if not memory_bytes(limit):
            raise ValueError(
                "WORKER_MAX_MEMORY must be a positive size in bytes, or with b, k, m or g"
            )
        return limit

    @model_validator(mode="after")
    def _pool_size_is_pool_min(self) -> Settings:
        if self.pool_size is not None and "pool_min" not in self.model_fields_set:
            self.pool_min = self.pool_size
        return self

    @model_validator(mode="before")
    @classmethod
    def _clamp(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {key: _clamp_one(key, value) for key, value in data.items()}


def _clamp_one(key: str, value: Any) -> Any:
    bounds = RANGES.get(key.lower())
    if bounds is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value  # let pydantic report the type error with the field name
    low, high = bounds
    clamped = min(max(number, low), high)
    if clamped != number:
        log.warning(
            "%s=%s is out of range [%s, %s]; using %s", key.upper(), value, low, high, clamped
        )
    return clamped


def memory_bytes(limit: str) -> int | None:
    """A Docker memory size ("512m", "2g", "1073741824") in bytes, as Docker reads it;
    None when it is not one. Docker takes 0 as "unlimited"."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([bkmg]?)", limit.strip().lower())
    if match is None:
        return None
    number, unit = match.groups()
    return int(float(number) * MEMORY_UNITS[unit])


def state_dir(settings: Settings) -> Path:
    """Where all-in-one state lives: STATE_DIR, else the XDG state dir."""
    if settings.state_dir:
        return Path(settings.state_dir)
    return Path(platformdirs.user_state_dir("parpaing"))


def gateway_auth_socket(settings: Settings) -> Path:
    """The Unix socket tower answers the gateway's token checks on."""
    if settings.gateway_auth_socket:
        return Path(settings.gateway_auth_socket)
    return state_dir(settings) / "gateway" / "auth.sock"


def gateway_host(settings: Settings) -> str:
    """The gateway's host name in GATEWAY_URL: what workers resolve."""
    return urllib.parse.urlsplit(settings.gateway_url).hostname or ""


def gateway_container(settings: Settings) -> str:
    return settings.gateway_container or gateway_host(settings)


def gateway_socket_volume(settings: Settings) -> str:
    """The volume of the workers' socket to the gateway: one per gateway, like its name."""
    return settings.gateway_socket_volume or f"{gateway_container(settings)}-socket"


def egress_managed(settings: Settings) -> bool:
    """Does tower run the egress proxy's container (EGRESS_MANAGED, unset: GATEWAY_MANAGED)?"""
    if settings.egress_managed is None:
        return bool(settings.gateway_managed)
    return bool(settings.egress_managed)


def egress_enabled(settings: Settings) -> bool:
    """Does this deployment have an egress proxy: one tower runs, or one of its own that
    asks the towers on EGRESS_LISTEN (compose)?"""
    return egress_managed(settings) or bool(settings.egress_listen)


def egress_socket_volume(settings: Settings) -> str | None:
    """The volume of the workers' socket to the egress proxy; None without a proxy."""
    if not egress_enabled(settings):
        return None
    return settings.egress_socket_volume or f"{settings.egress_container}-socket"


SECRETS_KEY_BYTES = 32
SECRETS_KEY_HINT = (
    "SECRETS_KEY must be 32 random bytes in URL-safe base64 "
    "(`parpaing credentials new-key` prints one)"
)


def secrets_key_bytes(text: str) -> bytes:
    """The key SECRETS_KEY holds; ValueError saying what it must be otherwise."""
    try:
        key = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raise ValueError(SECRETS_KEY_HINT) from None
    if len(key) != SECRETS_KEY_BYTES:
        raise ValueError(SECRETS_KEY_HINT)
    return key


def new_secrets_key() -> str:
    """A fresh SECRETS_KEY."""
    return base64.urlsafe_b64encode(os.urandom(SECRETS_KEY_BYTES)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key a secret stands for; ValueError if a whsec_ secret is not base64."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        if not secret:
            raise ValueError("WEBHOOK_SECRET must not be empty")
        return secret.encode()
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("WEBHOOK_SECRET: the part after whsec_ must be base64") from None
    if not key:
        raise ValueError("WEBHOOK_SECRET: whsec_ must be followed by a key")
    return key
