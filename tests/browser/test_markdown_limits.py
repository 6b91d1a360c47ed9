"""A job's result cannot freeze the dashboard: Markdown renders in time linear in the text,
and a result too large to render is shown as plain text.

Two kinds of input made the old renderer quadratic or worse:
- a regular expression that backtracks (from every `[` to the end of the text, say): few
  nodes come out, so rendering time is all scanning. These tests read `performance.now()`
  in the page, with a bound of 1 s for 500 KB and for 1 MB of such text: the linear
  renderer takes about 100 ms for 1 MB in Chromium on a 2-core machine, while the old one
  took 6 s for 500 K characters of `[a`, 10 s for 100 K of `[a](` and minutes for a heading
  with 8 000 spaces (cubic). Sizes above the dashboard's 200 KB Markdown limit keep the
  quadratic cases far from the bound (the old renderer did 200 K of `[a` in 0.9 s there).
- many spans, each making the old renderer search the rest of the text again with every
  rule. There the time is mostly building DOM nodes (as slow for a linear renderer as for
  any other), so a time bound would be tight; instead the page counts the characters its
  regular expressions read, which is deterministic: doubling the text must not much more
  than double it (the old renderer quadrupled it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import screenshot, submit_job

BUDGET_MS = 1000
# Past this the page is stuck, not slow: fail rather than wait for a cubic render.
STUCK_SECONDS = 60
HERE = Path(__file__).parent

# Build the text in the page (prefix + unit * count + suffix), render it, and time it. The
# characters read by regular expressions are counted from where each search starts to
# where its match ends (to the end of the text when nothing matches).
RENDER = """async ({ prefix, unit, count, suffix }) => {
  const { renderMarkdown } = await import('/ui/js/markdown.js');
  const text = prefix + unit.repeat(count) + suffix;
  const exec = RegExp.prototype.exec;
  let regexRead = 0;
  RegExp.prototype.exec = function (subject) {
    const string = String(subject);
    const start = this.global || this.sticky ? this.lastIndex : 0;
    const match = exec.call(this, string);
    regexRead += (match ? match.index + match[0].length : string.length) - start;
    return match;
  };
  let root;
  const started = performance.now();
  try { root = renderMarkdown(text); } finally { RegExp.prototype.exec = exec; }
  const ms = performance.now() - started;
  return { ms, regexRead, chars: text.length, textChars: root.textContent.length,
           depth: root.querySelectorAll('blockquote').length,
           anchors: root.querySelectorAll('a').length };
}"""

# (name, prefix, unit, suffix): each backtracked quadratically or worse, or overflowed
# the stack.
BACKTRACKING = [
    ("unclosed link labels", "", "[a", ""),
    ("link labels without a URL end", "", "[a](", ""),
    ("unclosed autolinks", "", "<http://", ""),
    ("spaces inside a heading", "# a", " ", "b"),
    ("spaces in a table's delimiter row", "a|b\n", " ", "x"),
    ("spaces after a task box", "- [ ]", " ", "a\u2028"),
    ("nested quotes", "", ">", "quoted"),
]
# Text dense with spans (or would-be spans).
DENSE = [
    ("code spans then an unclosed label", "", "`a` ", "["),
    ("bold markers never closed", "", "**a*", ""),
    ("bare URLs", "", "https://x.y/a ", ""),
    ("links", "", "[a](https://x.y) ", ""),
    ("underscores", "", "_a_ b", ""),
]


async def render_in_page(page: Page, prefix: str, unit: str, count: int, suffix: str) -> Any:
    arguments = {"prefix": prefix, "unit": unit, "count": count, "suffix": suffix}
    try:
        return await asyncio.wait_for(page.evaluate(RENDER, arguments), STUCK_SECONDS)
    except TimeoutError:
        pytest.fail(f"rendering {len(prefix) + len(unit) * count} characters never finished")


@pytest.mark.parametrize(("name", "prefix", "unit", "suffix"), BACKTRACKING)
async def test_hostile_markdown_renders_within_budget(
    page: Page, tower_url: str, name: str, prefix: str, unit: str, suffix: str
) -> None:
    await page.goto(f"{tower_url}/ui/")
    for size in (500_000, 1_000_000):  # n and 2n characters: both well within the budget
        rendered = await render_in_page(page, prefix, unit, size // len(unit), suffix)
        assert rendered["ms"] < BUDGET_MS, f"{name}: {rendered}"
        assert rendered["textChars"] > 0


@pytest.mark.parametrize(("name", "prefix", "unit", "suffix"), DENSE + BACKTRACKING)
async def test_regular_expressions_read_the_text_a_bounded_number_of_times(
    page: Page, tower_url: str, name: str, prefix: str, unit: str, suffix: str
) -> None:
    await page.goto(f"{tower_url}/ui/")
    size = 20_000  # small: the old renderer must finish too, to be counted
    small = await render_in_page(page, prefix, unit, size // len(unit), suffix)
    large = await render_in_page(page, prefix, unit, 2 * size // len(unit), suffix)
    # Linear: twice the text, about twice the reading (2.5 leaves room for constant terms).
    assert large["regexRead"] <= 2.5 * small["regexRead"], f"{name}: {small} then {large}"


async def test_deep_quotes_are_bounded_and_shown(page: Page, tower_url: str) -> None:
    await page.goto(f"{tower_url}/ui/")
    rendered = await render_in_page(page, "", ">", 100_000, "quoted")
    assert rendered["depth"] <= 20  # nesting is capped; the rest stays text
    assert rendered["textChars"] > 0


async def test_a_bare_url_is_one_link(page: Page, tower_url: str) -> None:
    """An autolink's label is its URL as text: rendered as Markdown again, it nested
    anchors until the stack ran out."""
    await page.goto(f"{tower_url}/ui/")
    links = await page.evaluate(
        """async () => {
          const { renderMarkdown } = await import('/ui/js/markdown.js');
          const root = renderMarkdown('see https://example.invalid/x. and <https://b.invalid>');
          const links = [...root.querySelectorAll('a')];
          return links.map((a) => [a.textContent, a.href, a.children.length]);
        }"""
    )
    assert links == [
        ["https://example.invalid/x", "https://example.invalid/x", 0],
        ["https://b.invalid", "https://b.invalid/", 0],
    ]


async def test_markdown_renders_as_it_did(page: Page, tower_url: str) -> None:
    """Links, code, emphasis, lists, quotes, tables: the same DOM as the regex renderer made
    (markdown_sample.html is its output for markdown_sample.md)."""
    await page.goto(f"{tower_url}/ui/")
    html = await page.evaluate(
        """async (source) => {
          const { renderMarkdown } = await import('/ui/js/markdown.js');
          return renderMarkdown(source).innerHTML;
        }""",
        (HERE / "markdown_sample.md").read_text(),
    )
    assert html == (HERE / "markdown_sample.html").read_text().strip()


# Records how long the page's main thread was ever busy at once (the Long Tasks API).
LONG_TASK_WATCHDOG = """
window.__longestTask = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.__longestTask = Math.max(window.__longestTask, entry.duration);
  }
}).observe({ type: 'longtask', buffered: true });
"""


async def test_a_result_of_80k_brackets_and_a_url_renders_without_freezing_the_page(
    page: Page, tower_url: str
) -> None:
    """The issue's input, then a URL as agents print them (one made the old renderer nest
    anchors until the stack ran out, and the result card stayed empty)."""
    await page.add_init_script(LONG_TASK_WATCHDOG)
    prompt = "print " + "[a" * 40_000 + "\nprint Report: https://example.invalid/report."
    job_id = await submit_job(tower_url, prompt=prompt, agent_id="brackets")
    await page.goto(f"{tower_url}/ui/#/jobs/{job_id}")
    result = page.locator(".result .markdown")
    await expect(result.locator("a")).to_have_attribute("href", "https://example.invalid/report")
    await expect(result).to_contain_text("[a[a[a")
    text = "[a" * 40_000 + "Report: https://example.invalid/report."
    assert await result.evaluate("(node) => node.textContent") == text
    longest = await page.evaluate("window.__longestTask")
    assert longest < BUDGET_MS, f"the page's main thread was busy for {longest} ms at once"


async def test_a_result_over_200_kb_is_shown_as_plain_text(page: Page, tower_url: str) -> None:
    line = "**not bold** [not a link](https://example.invalid) `not code` " + "x" * 40
    lines = [f"{number:05} {line}" for number in range(3000)]  # about 320 KB
    job_id = await submit_job(
        tower_url, prompt="\n".join(f"print {text}" for text in lines), agent_id="big"
    )
    await page.goto(f"{tower_url}/ui/#/jobs/{job_id}")
    result = page.locator(".result")
    await expect(result.locator(".result-note")).to_have_text(
        "Shown as plain text: larger than 200 KB."
    )
    plain = result.locator("pre.plain-text")
    await expect(plain).to_contain_text(lines[-1])
    assert await plain.evaluate("(node) => node.textContent") == "\n".join(lines)
    assert await result.locator(".markdown, strong, a, code").count() == 0
    await screenshot(page, "job-result-plain-text")
