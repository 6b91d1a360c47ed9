"""Jinja2 templates, rendered in a sandbox: templates are written through the API, so
they are untrusted code as far as tower is concerned. Checking one only parses it, here;
rendering one runs it, in a renderer process with a time and a memory limit
(tower/configs/renderer.py) and a sandbox that caps what it builds (tower/configs/sandbox.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, meta

from tower.configs import renderer
from tower.configs.models import Profile
from tower.configs.sandbox import environment
from tower.configs.values import resolve_vars
from tower.errors import Invalid


def check_syntax(name: str, source: str) -> None:
    """Raise Invalid naming the line when `source` is not a valid template."""
    try:
        environment().parse(source)
    except TemplateSyntaxError as error:
        raise Invalid(
            f"template {name!r} line {error.lineno}: {error.message}", field="content"
        ) from None
    except RecursionError:
        raise Invalid(f"template {name!r}: nested too deeply", field="content") from None


def undeclared_names(source: str) -> set[str]:
    """Names the template reads from its context (not those it sets itself)."""
    return set(meta.find_undeclared_variables(environment().parse(source)))


def render_prompt(
    profile: Profile, template_source: str | None, prompt: str, prompt_vars: Mapping[str, Any]
) -> str:
    """The prompt the engine receives: the profile's template around the caller's prompt,
    with typed variables checked and their defaults applied. Never truncated."""
    values = resolve_vars(profile.name, profile.vars, prompt_vars)
    if template_source is None or (profile.compat == "parpaing" and prompt):
        return prompt  # Parpaing: the request's prompt wins over the profile's template
    context = {**values, "prompt": prompt, "profile": profile.name}
    return _render(
        profile.prompt_template or "prompt",
        template_source,
        _compat(profile, template_source, context),
    )


def render_claude_md(
    profile: Profile, template_source: str, claude_md_vars: Mapping[str, Any]
) -> str:
    """CLAUDE.md for the job. Its variables are free-form, so they are reached as
    `vars.<name>` (and tested with `vars.name is defined`), never as bare names."""
    merged = {**profile.claude_md_vars, **claude_md_vars}
    context: dict[str, Any] = {"profile": profile.name, "model": profile.model, "vars": merged}
    if profile.compat == "parpaing":
        context = {**merged, **context}  # Parpaing's CLAUDE.md templates read bare names
    return _render(
        profile.claude_md_template or "claude_md",
        template_source,
        _compat(profile, template_source, context),
    )


def _compat(profile: Profile, source: str, context: dict[str, Any]) -> dict[str, Any]:
    """For a profile converted from Parpaing, each name the template reads that is not in
    `context` is a lenient Undefined, as in Parpaing: empty, false, and replaced by
    `default(...)`. Ours stay strict: a typo is an error there."""
    if profile.compat != "parpaing":
        return context
    missing = undeclared_names(source) - set(context)
    return {**context, **{name: Undefined(name=name) for name in missing}}


def _render(name: str, source: str, context: Mapping[str, Any]) -> str:
    try:
        return renderer.render(source, context)
    except renderer.RenderFailed as error:
        # Undefined names, sandbox refusals, errors in template expressions and limits
        # overrun all land here: the profile or its template is at fault, not the server.
        raise Invalid(f"template {name!r}: {error}", field="profile") from None
