"""Jinja2 templates, rendered in a sandbox: templates are written through the API, so
they are untrusted code as far as tower is concerned."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from tower.configs.models import Profile
from tower.configs.values import resolve_vars
from tower.errors import Invalid


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    # No autoescape: the output is a prompt or a Markdown file, not HTML.
    return SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def check_syntax(name: str, source: str) -> None:
    """Raise Invalid naming the line when `source` is not a valid template."""
    try:
        environment().parse(source)
    except TemplateSyntaxError as error:
        raise Invalid(
            f"template {name!r} line {error.lineno}: {error.message}", field="content"
        ) from None


def undeclared_names(source: str) -> set[str]:
    """Names the template reads from its context (not those it sets itself)."""
    return set(meta.find_undeclared_variables(environment().parse(source)))


def render_prompt(
    profile: Profile, template_source: str | None, prompt: str, prompt_vars: Mapping[str, Any]
) -> str:
    """The prompt the engine receives: the profile's template around the caller's prompt,
    with typed variables checked and their defaults applied. Never truncated."""
    values = resolve_vars(profile.name, profile.vars, prompt_vars)
    if template_source is None:
        return prompt
    context = {**values, "prompt": prompt, "profile": profile.name}
    return _render(profile.prompt_template or "prompt", template_source, context)


def render_claude_md(
    profile: Profile, template_source: str, claude_md_vars: Mapping[str, Any]
) -> str:
    """CLAUDE.md for the job. Its variables are free-form, so they are reached as
    `vars.<name>` (and tested with `vars.name is defined`), never as bare names."""
    context = {"profile": profile.name, "model": profile.model, "vars": dict(claude_md_vars)}
    return _render(profile.claude_md_template or "claude_md", template_source, context)


def _render(name: str, source: str, context: Mapping[str, Any]) -> str:
    try:
        return environment().from_string(source).render(context)
    except (TemplateError, ArithmeticError, TypeError, ValueError) as error:
        # Undefined names, sandbox refusals and errors in template expressions all land
        # here: the profile or its template is at fault, not the server.
        raise Invalid(f"template {name!r}: {error}", field="profile") from None
