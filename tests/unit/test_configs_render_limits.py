"""Templates cannot burn CPU or memory: what they build is capped in the sandbox before it
is built, and they render in a renderer process with a time and a memory limit, killed and
replaced when a render overruns. Real renderer processes throughout."""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from jinja2 import Environment

from tower.configs import frames
from tower.configs.parse import parse_profile
from tower.configs.render import check_syntax, render_claude_md, render_prompt
from tower.configs.sandbox import OUTPUT_MAX
from tower.configs.store import ConfigStore
from tower.errors import Invalid

PLAIN = parse_profile("plain", '[vars.who]\ntype = "string"\ndefault = "world"\n')
MB = 1 << 20


def renderer_pids() -> set[int]:
    """The renderer processes below this one, read from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if parent == os.getpid() and b"tower.configs.render_child" in command:
            found.add(int(stat.parent.name))
    return found


def peak_rss(pid: int | str = "self") -> int:
    """VmHWM: the most memory the process has ever had resident, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def refusal(source: str, prompt: str = "p") -> str:
    with pytest.raises(Invalid) as caught:
        render_prompt(PLAIN, source, prompt, {})
    assert caught.value.field == "profile"
    return caught.value.message


def test_repeating_the_prompt_past_the_cap_is_refused_before_anything_is_built() -> None:
    before = peak_rss()
    message = refusal("{{ prompt * 10**9 }}")
    assert "would make 1000000000 bytes" in message
    assert peak_rss() - before < 100 * MB
    (renderer,) = renderer_pids()
    assert peak_rss(renderer) < 200 * MB


@pytest.mark.parametrize(
    ("source", "prompt", "says"),
    [
        ("{{ ([0] * 20000000) | length }}", "p", "would make 160000000 bytes"),
        ("{% set s = prompt * 1000 %}{{ (s + s) | length }}", "x" * 70_000, "'+' would make"),
        ("{{ (2 ** 1000000) > 0 }}", "p", "bits"),
    ],
)
def test_lists_sums_and_powers_past_the_caps_are_refused(
    source: str, prompt: str, says: str
) -> None:
    assert says in refusal(source, prompt)


def test_nested_ranges_are_refused_past_a_budget_for_the_whole_render() -> None:
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    assert "ranges of more than 1000000 items" in refusal(source)
    # A single range of the sandbox's largest size is still fine.
    assert render_prompt(PLAIN, "{{ range(100000) | sum }}", "p", {}) == str(sum(range(100000)))


def test_a_render_over_the_time_limit_is_killed_and_the_next_render_works() -> None:
    render_prompt(PLAIN, "{{ prompt }}", "p", {})  # a renderer is running
    (first,) = renderer_pids()
    quadratic = "{% for a in prompt %}{% for b in prompt %}{% endfor %}{% endfor %}"
    assert refusal(quadratic, "x" * 100_000) == "template 'prompt': took longer than 2 s"
    assert first not in renderer_pids()  # killed and reaped
    assert render_prompt(PLAIN, "{{ prompt }} to {{ who }}", "hello", {}) == "hello to world"
    assert len(renderer_pids()) == 1


def test_output_past_the_cap_stops_the_render() -> None:
    source = "{% for i in range(1000) %}{{ prompt }}{% endfor %}"
    message = refusal(source, "y" * (2 * MB))
    assert message == f"template 'prompt': rendered more than {OUTPUT_MAX} bytes"


def test_a_render_out_of_memory_fails_and_the_next_render_works() -> None:
    message = refusal("{{ ('%01100000000d' % 1) | length }}")
    assert "memory" in message
    assert render_prompt(PLAIN, "{{ who }}", "p", {}) == "world"


def test_errors_that_escaped_as_crashes_are_template_errors_now() -> None:
    assert "recursion" in refusal("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")


def test_a_normal_render_is_exact_small_pieces_and_long_values_alike() -> None:
    prompt = ("é\U0001f600{{ not a template }}\n" * 300_000) + "\ud7ff end"
    source = (
        "{% for i in range(30000) %}{{ i }}-{{ who }} {% endfor %}\n"
        "{{ prompt }}\n{{ prompt | length }}"
    )
    expected = Environment(keep_trailing_newline=True).from_string(source)
    text = render_prompt(PLAIN, source, prompt, {"who": "you"})
    assert text == expected.render(prompt=prompt, who="you")
    assert len(text) > 2 * MB  # several frames, and the prompt passed back by name


def test_claude_md_renders_through_the_same_renderer() -> None:
    text = render_claude_md(PLAIN, "{{ vars.a }}/{{ vars.b * 2 }}/{{ model }}", {"a": "x", "b": 3})
    assert text == "x/6/None"
    with pytest.raises(Invalid, match="took longer than 2 s"):
        render_claude_md(
            PLAIN,
            "{% for a in vars.s %}{% for b in vars.s %}{% endfor %}{% endfor %}",
            {"s": "z" * 100_000},
        )


def test_the_renderer_holds_none_of_towers_environment() -> None:
    render_prompt(PLAIN, "{{ prompt }}", "p", {})
    pids = renderer_pids()
    assert pids
    for pid in pids:
        assert Path(f"/proc/{pid}/environ").read_bytes() == b""


def test_the_renderer_exits_when_tower_dies() -> None:
    script = (
        "import os, sys\n"
        "from tower.configs import renderer\n"
        "renderer.render('{{ 1 }}', {})\n"
        "print(os.getpid(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    tower = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert tower.stdout is not None
    tower.stdout.readline()
    (child,) = [pid for pid in _children_of(tower.pid)]
    watch = os.pidfd_open(child)
    try:
        tower.kill()
        tower.wait()
        # The renderer's exit is the event waited for; the timeout only bounds a failure.
        assert select.select([watch], [], [], 60)[0], "the renderer outlived tower"
    finally:
        os.close(watch)


def _children_of(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return found


class _Hub:
    """The config store's NOTIFY hub, which this test does not use."""

    def on(self, channel: str, callback: object) -> None:
        pass

    def on_reconnect(self, callback: object) -> None:
        pass


async def test_the_renderers_are_closed_with_the_config_store() -> None:
    store = ConfigStore(pool=None, hub=_Hub())
    render_prompt(PLAIN, "{{ prompt }}", "p", {})
    assert renderer_pids()
    await store.close()
    assert not renderer_pids()  # exited and reaped


def test_a_template_nested_too_deeply_is_invalid_not_a_crash() -> None:
    with pytest.raises(Invalid, match="nested too deeply"):
        check_syntax("deep", "{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}")


def test_a_large_template_compiled_at_each_render_renders_the_same() -> None:
    source = "{{ who }}" + "x" * 100_000 + "{{ prompt }}"
    for _ in range(2):
        assert render_prompt(PLAIN, source, "p", {}) == "world" + "x" * 100_000 + "p"


def test_a_renderer_left_rendering_without_tower_ends_itself_at_its_alarm() -> None:
    # A time limit of 0.1 s and a fast rate for passed bytes: the alarm comes at 0.2 s
    # and some, past which nothing would be waiting for the render any more.
    code = "from tower.configs.render_child import main; main(1 << 30, 0.1, 10**12)"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    tag, _ = frames.read_frame(child.stdout.fileno())
    assert tag == frames.READY
    quadratic = "{% for a in prompt %}{% for b in prompt %}{% endfor %}{% endfor %}"
    request = pickle.dumps((quadratic, {"prompt": "x" * 100_000}))
    frames.write_frame(child.stdin.fileno(), frames.RENDER, request)
    try:
        assert child.wait(timeout=60) == -signal.SIGALRM
    finally:
        child.kill()
        child.stdin.close()
        child.stdout.close()
