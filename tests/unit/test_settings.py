from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from tower.settings import RANGES, Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)


def test_out_of_range_values_are_clamped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_JOBS", "100000")
    monkeypatch.setenv("POOL_SIZE", "-3")
    monkeypatch.setenv("POLL_INTERVAL", "0")
    with caplog.at_level(logging.WARNING, logger="tower.settings"):
        settings = Settings()
    assert settings.max_concurrent_jobs == RANGES["max_concurrent_jobs"][1]
    assert settings.pool_min == RANGES["pool_min"][0]
    assert settings.poll_interval == RANGES["poll_interval"][0]
    warned = caplog.text
    assert "MAX_CONCURRENT_JOBS=100000 is out of range" in warned
    assert "POOL_SIZE=-3" in warned and "POLL_INTERVAL=0" in warned


def test_values_in_range_are_kept_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_JOBS", "16")
    monkeypatch.setenv("WORKER_CPU_LIMIT", "0.5")
    with caplog.at_level(logging.WARNING, logger="tower.settings"):
        settings = Settings()
    assert settings.max_concurrent_jobs == 16
    assert settings.worker_cpu_limit == 0.5
    assert caplog.text == ""


@pytest.mark.parametrize(("field", "bounds"), sorted(RANGES.items()))
def test_every_range_clamps_both_ends(field: str, bounds: tuple[float, float]) -> None:
    low, high = bounds
    assert getattr(Settings.model_validate({field: low - 1}), field) == low
    assert getattr(Settings.model_validate({field: high + 1}), field) == high


def test_every_range_names_a_real_setting() -> None:
    assert set(RANGES) <= set(Settings.model_fields)


def test_a_value_that_is_not_a_number_is_an_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOWER_PORT", "eighty")
    with pytest.raises(ValidationError, match="tower_port"):
        Settings()


def test_defaults_without_environment() -> None:
    settings = Settings()
    assert settings.tower_port == 8080
    assert settings.database_url == ""
    assert settings.tower_runner == "docker"


def test_a_malformed_webhook_secret_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_not*base64")
    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings()


def test_the_webhook_secret_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_c2VjcmV0LWtleS1ieXRlcw==")
    settings = Settings()
    assert "c2VjcmV0" not in repr(settings)
    assert settings.webhook_secret.get_secret_value() == "whsec_c2VjcmV0LWtleS1ieXRlcw=="


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose.yml passes every setting as ${NAME:-}: unset in .env arrives empty.
    for name in ("MAX_CONCURRENT_JOBS", "SHUTDOWN_GRACE_SECONDS", "POOL_DRAIN_ON_LAST_STOP"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    defaults = Settings.model_fields
    assert settings.max_concurrent_jobs == defaults["max_concurrent_jobs"].default
    assert settings.shutdown_grace_seconds == defaults["shutdown_grace_seconds"].default
    assert settings.pool_drain_on_last_stop is False
