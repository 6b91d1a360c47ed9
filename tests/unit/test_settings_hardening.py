"""Settings that keep a secret secret and bound what a job may ask of its container."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tower.settings import Settings, memory_bytes

KEY = "s3cret-tower-key-0123"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)


def test_the_api_key_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_API_KEY", KEY)
    settings = Settings()
    for shown in (repr(settings), str(settings), repr(settings.tower_api_key)):
        assert KEY not in shown
    assert settings.tower_api_key.get_secret_value() == KEY


def test_the_api_key_can_still_be_given_as_a_plain_string() -> None:
    settings = Settings(tower_api_key=KEY)
    assert KEY not in repr(settings)
    assert settings.tower_api_key.get_secret_value() == KEY
    assert Settings().tower_api_key.get_secret_value() == ""


def test_the_worker_maxima_have_their_defaults() -> None:
    settings = Settings()
    assert settings.worker_max_memory == "8g"
    assert settings.worker_max_cpus == 4.0
    assert settings.worker_max_timeout_seconds == 7200


@pytest.mark.parametrize("value", ["0", "0g", "lots", "-1g"])
def test_an_unusable_max_memory_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WORKER_MAX_MEMORY", value)
    with pytest.raises(ValidationError, match="worker_max_memory"):
        Settings()


@pytest.mark.parametrize(
    ("limit", "size"),
    [("512m", 512 << 20), ("2g", 2 << 30), ("2G", 2 << 30), ("1024", 1024), ("0", 0), ("x", None)],
)
def test_memory_bytes_reads_sizes_as_docker_does(limit: str, size: int | None) -> None:
    assert memory_bytes(limit) == size


def test_the_warm_pool_shape_keeps_within_the_maxima() -> None:
    # Warm containers must fit the jobs, whose own shapes are clamped to the same maxima.
    from tower.execution.docker.hardening import shape_from_settings

    settings = Settings(
        worker_mem_limit="0", worker_cpu_limit=8.0, worker_max_memory="4g", worker_max_cpus=2.0
    )
    shape = shape_from_settings(settings, "sha256:image")
    assert (shape.memory, shape.cpus) == ("4g", 2.0)
    within = Settings(worker_mem_limit="1g", worker_cpu_limit=1.0)
    assert (shape_from_settings(within).memory, shape_from_settings(within).cpus) == ("1g", 1.0)
