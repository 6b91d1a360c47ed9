"""The Jinja2 sandbox templates run in, with limits on what one expression may build.

Templates are written through the API, so they are untrusted code. Jinja's sandbox stops
them reaching Python internals; this one also refuses, before computing it, an operation
whose result would pass the output cap (`prompt * 10**9` would otherwise allocate a
gigabyte first), a power with an absurd number of digits, and ranges past a per-render
budget (nested loops over `range(100000)` are 10**10 steps). What slips past these (a
filter padding to a huge width, a loop over a long prompt inside another) is stopped by
the renderer process's memory limit and time limit (tower/configs/renderer.py).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import MAX_RANGE, SandboxedEnvironment

# Room for a prompt at the API's limit (PROMPT_MAX, 100 MB in tower/jobs/schemas.py) and
# the template around it; nothing a template writes legitimately comes close.
OUTPUT_MAX = 128 * 1024 * 1024
# Items all the ranges of one render may hold together: ten of the largest range Jinja's
# sandbox allows, far more than a prompt template has a use for.
RANGE_ITEMS_MAX = 10 * MAX_RANGE
# Bits an integer a template computes may have: about 30,000 digits, more than Python will
# print (4,300), so nothing useful is refused.
INT_BITS_MAX = 100_000
# A list item costs at least a pointer: lists are measured in bytes like strings.
_ITEM_BYTES = 8

_range_left: ContextVar[int] = ContextVar("range_left", default=RANGE_ITEMS_MAX)


class CappedSandbox(SandboxedEnvironment):
    # Constant folding at compile time skips intercepted operators, so these are checked
    # even between literals.
    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self) -> None:
        # No autoescape: the output is a prompt or a Markdown file, not HTML.
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.globals["range"] = budgeted_range

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _BINOPS[operator](left, right)


_BINOPS = {"*": operator.mul, "**": operator.pow, "+": operator.add}


def _check_binop(op: str, left: Any, right: Any) -> None:
    if op == "*":
        _check_repeat(left, right)
        _check_repeat(right, left)
        if _is_int(left) and _is_int(right):
            _check_bits(left.bit_length() + right.bit_length())
    elif op == "+":
        size = _size(left) + _size(right)
        if size > OUTPUT_MAX:
            raise SecurityError(f"'+' would make {size} bytes, more than {OUTPUT_MAX}")
    elif op == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _check_bits(right * (abs(left).bit_length() - 1))


def _check_repeat(sequence: Any, times: Any) -> None:
    if not _is_int(times) or not isinstance(sequence, str | list | tuple):
        return
    size = _size(sequence) * times
    if size > OUTPUT_MAX:
        raise SecurityError(f"'*' would make {size} bytes, more than {OUTPUT_MAX}")


def _check_bits(bits: int) -> None:
    if bits > INT_BITS_MAX:
        raise SecurityError(f"a number of {bits} bits, more than {INT_BITS_MAX}")


def _size(value: Any) -> int:
    """A lower bound of the bytes `value` takes, for strings and lists; 0 for the rest."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return len(value) * _ITEM_BYTES
    return 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def budgeted_range(*args: int) -> range:
    """range(), refused once the ranges of this render would hold more than
    RANGE_ITEMS_MAX items: nested ranges each small enough alone still multiply."""
    items = range(*args)
    left = _range_left.get() - len(items)
    if len(items) > MAX_RANGE or left < 0:
        raise SecurityError(f"ranges of more than {RANGE_ITEMS_MAX} items in all")
    _range_left.set(left)
    return items


@lru_cache(maxsize=1)
def environment() -> CappedSandbox:
    return CappedSandbox()


# Templates up to this size are compiled once and kept; a larger one (the API allows
# 1 MB) is compiled at each render, so a few of them cannot fill the renderer's memory.
_CACHED_SOURCE_MAX = 64 * 1024


@lru_cache(maxsize=128)
def _compiled_once(source: str) -> Template:
    return environment().from_string(source)


def compiled(source: str) -> Template:
    """The template compiled, once for the usual small ones: a profile's template is
    rendered for each of its jobs."""
    if len(source) > _CACHED_SOURCE_MAX:
        return environment().from_string(source)
    return _compiled_once(source)


def generate(source: str, context: Mapping[str, Any]) -> Iterator[str]:
    """The template's output, a piece at a time, with a fresh range budget."""
    _range_left.set(RANGE_ITEMS_MAX)
    return compiled(source).generate(context)
