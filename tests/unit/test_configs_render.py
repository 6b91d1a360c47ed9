from __future__ import annotations

import pytest

from tower.configs.defaults import shipped_defaults
from tower.configs.models import Profile
from tower.configs.parse import parse_profile
from tower.configs.render import check_syntax, render_claude_md, render_prompt, undeclared_names
from tower.errors import Invalid

SHIPPED = {(kind, name): content for kind, name, content in shipped_defaults()}


def profile(name: str) -> Profile:
    return parse_profile(name, SHIPPED[("profile", name)])


def template(name: str) -> str:
    return SHIPPED[("template", name)]


PLAIN = parse_profile("plain", '[vars.who]\ntype = "string"\ndefault = "world"\n')


def test_template_sees_prompt_and_typed_variables_with_defaults() -> None:
    text = render_prompt(PLAIN, "{{ prompt }} to {{ who }}", "hello", {})
    assert text == "hello to world"


def test_no_template_passes_the_prompt_through_but_still_checks_variables() -> None:
    assert render_prompt(PLAIN, None, "as is", {"who": "you"}) == "as is"
    with pytest.raises(Invalid) as caught:
        render_prompt(PLAIN, None, "as is", {"who": 1})
    assert caught.value.field == "prompt_vars.who"


def test_a_long_prompt_reaches_the_output_whole() -> None:
    prompt = "x" * 5_000_000 + "END"
    text = render_prompt(PLAIN, "before\n{{ prompt }}\nafter", prompt, {})
    assert text == f"before\n{prompt}\nafter"


def test_prompt_is_not_interpreted_as_a_template() -> None:
    prompt = "{{ 7 * 6 }} {% raw %}"
    assert render_prompt(PLAIN, "{{ prompt }}", prompt, {}) == prompt


def test_undefined_name_in_template_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(Invalid) as caught:
        render_prompt(PLAIN, "{{ prompt }} {{ missing }}", "p", {})
    assert "missing" in caught.value.message


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ prompt.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ who.format.__self__ }}",
        "{% set x = ''.__class__ %}{{ x }}",
        "{{ (1).__class__.__mro__[1].__subclasses__() }}",
    ],
)
def test_sandbox_refuses_attribute_tricks(source: str) -> None:
    with pytest.raises(Invalid):
        render_prompt(PLAIN, source, "p", {})


def test_sandbox_refuses_calling_unsafe_methods() -> None:
    with pytest.raises(Invalid) as caught:
        render_prompt(PLAIN, "{{ who.__class__.mro() }}", "p", {})
    assert caught.value.field == "profile"


def test_runtime_errors_in_templates_are_invalid_not_crashes() -> None:
    with pytest.raises(Invalid):
        render_prompt(PLAIN, "{{ 1 / 0 }}", "p", {})


def test_check_syntax_names_the_line() -> None:
    with pytest.raises(Invalid) as caught:
        check_syntax("t", "ok\nok\n{{ broken \n")
    assert "line 3" in caught.value.message or "line 4" in caught.value.message


def test_undeclared_names_ignores_names_the_template_sets() -> None:
    assert undeclared_names("{% set a = 1 %}{{ a }}{{ b }}{% for i in c %}{{ i }}{% endfor %}") == {
        "b",
        "c",
    }


def test_shipped_code_review_template_renders_typed_variables() -> None:
    review = profile("code-review")
    text = render_prompt(review, template("code-review"), "Look at auth.", {"focus": "security"})
    assert "focusing on security" in text
    assert "Look at auth." in text
    assert "at most 20 findings" in text
    assert "done well" not in text
    with_praise = render_prompt(review, template("code-review"), "p", {"include_praise": True})
    assert "done well" in with_praise


def test_shipped_templates_use_only_declared_variables() -> None:
    for (kind, name), content in SHIPPED.items():
        if kind != "profile":
            continue
        config = parse_profile(name, content)
        if config.prompt_template:
            used = undeclared_names(template(config.prompt_template))
            assert used <= {"prompt", "profile", *config.vars}, name


def test_shipped_default_prompt_appends_context_only_when_given() -> None:
    default = profile("default")
    assert render_prompt(default, template("default"), "Fix it.", {}) == "Fix it.\n"
    text = render_prompt(default, template("default"), "Fix it.", {"context": "Python 3.11"})
    assert "## Context" in text
    assert "Python 3.11" in text


def test_claude_md_reaches_free_form_variables_through_vars() -> None:
    default = profile("default")
    text = render_claude_md(default, template("claude-md"), {"project": "Parpaing"})
    assert "`default` profile" in text
    assert "Parpaing" in text
    assert "## Conventions" not in text
