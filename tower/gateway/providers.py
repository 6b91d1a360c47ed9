"""Which LLM providers have a credential, and which providers an engine calls: what submit
(a 409 before a job that could only fail), /health and `parpaing doctor` all report.

A credential counts only where this tower knows it: when it runs the gateway itself
(GATEWAY_MANAGED, all-in-one), it hands the gateway its keys (tower/gateway/container.py).
A gateway run by someone else (compose) holds keys this tower never sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tower.configs.models import Engine
from tower.errors import Conflict
from tower.settings import Settings

# Provider: the gateway's route (`{gateway_url}/<provider>`), and the variables any one of
# which gives it a credential (the Settings field is the variable's name in lower case).
CREDENTIAL_VARIABLES: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"),
    "openai": ("OPENAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY",),
}
ALL_VARIABLES = tuple(name for names in CREDENTIAL_VARIABLES.values() for name in names)
_ROUTE = re.compile(r"\{gateway_url\}/(" + "|".join(CREDENTIAL_VARIABLES) + r")(?![\w-])")


@dataclass(frozen=True)
class Providers:
    """What this tower knows of the provider credentials. `known` is False when the
    gateway is someone else's: then `with_credential` is empty and says nothing."""

    known: bool
    with_credential: tuple[str, ...]

    def describe(self) -> str:
        """One line, never a key: the providers with a credential, or why none."""
        if not self.known:
            return "held by the gateway at GATEWAY_URL (GATEWAY_MANAGED=false), not by tower"
        if self.with_credential:
            return ", ".join(self.with_credential)
        return f"none (set {' or '.join(ALL_VARIABLES)})"


def providers(settings: Settings) -> Providers:
    if not settings.gateway_managed:
        return Providers(known=False, with_credential=())
    named = tuple(name for name in CREDENTIAL_VARIABLES if _has_credential(settings, name))
    return Providers(known=True, with_credential=named)


def _has_credential(settings: Settings, provider: str) -> bool:
    fields = (getattr(settings, variable.lower()) for variable in CREDENTIAL_VARIABLES[provider])
    return any(field.get_secret_value() for field in fields)


def engine_providers(engine: Engine) -> list[str]:
    """The providers an engine's CLI is pointed at (its env's `{gateway_url}/<provider>`);
    an engine pointed at several (Aider) uses whichever its model belongs to."""
    found = {match for value in engine.env.values() for match in _ROUTE.findall(value)}
    found |= {match for arg in engine.args for match in _ROUTE.findall(arg)}
    return [name for name in CREDENTIAL_VARIABLES if name in found]


class NoCredential(Conflict):
    """409: the job's engine calls providers none of which has a credential."""


def require_credential(settings: Settings, name: str, engine: Engine) -> None:
    """Refuse a job that could only fail: its engine would call providers without a
    credential, retrying the gateway's refusals until its timeout. Only where tower
    knows the keys and runs jobs in Docker (the simulated runner calls no provider)."""
    known = providers(settings)
    if settings.tower_runner != "docker" or not known.known:
        return
    wanted = engine_providers(engine)
    if not wanted or set(wanted) & set(known.with_credential):
        return
    variables = " or ".join(_variables(wanted))
    raise NoCredential(
        f"engine {name!r} calls {' or '.join(wanted)}, which has no credential on this"
        f" tower: set {variables} and restart it (or submit a dry run)"
    )


def _variables(names: list[str]) -> list[str]:
    return [variable for name in names for variable in CREDENTIAL_VARIABLES[name]]
