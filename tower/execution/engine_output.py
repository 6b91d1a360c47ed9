"""What an engine's own output says: its final text, and the tokens and cost it reported.

Pure. One reader per output shape (the engine TOML's `output`):
- `json` (Claude Code, Gemini CLI): one JSON object (Gemini's usage under
  `stats.models`); Claude Code's stream-json ends with the same object as its last
  `type: result` line;
- `jsonl` (Codex CLI `--json`, OpenCode `--format json`): one event per line;
- `text` (Aider): its closing `Tokens: … sent, … received. Cost: …` lines.
`usage` is {input_tokens, output_tokens, cost_usd}, each None when the engine did not say.
A figure that is not a finite number (JSON's `NaN`/`Infinity`, which Python's json
accepts) is one the engine did not say: it could not be stored (jsonb refuses it).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

Usage = dict[str, Any]


@dataclass(frozen=True)
class EngineReport:
    final_text: str | None
    usage: Usage | None
    is_error: bool = False


def usage_of(
    input_tokens: int | None, output_tokens: int | None, cost_usd: float | None
) -> Usage | None:
    if input_tokens is None and output_tokens is None and cost_usd is None:
        return None
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost_usd}


# --- json ------------------------------------------------------------------------------


def read_json(text: str) -> EngineReport | None:
    """The engine's JSON result: the whole output, or (stream-json) its last line of
    `type: result`. None when there is none."""
    report = json_object(text)
    if report is None:
        for line in reversed(text.splitlines()):
            event = json_object(line)
            if event is not None and event.get("type") == "result":
                report = event
                break
    if report is None:
        return None
    return EngineReport(_final_text(report), _json_usage(report), report.get("is_error") is True)


def _final_text(report: dict[str, Any]) -> str:
    # Claude Code names it `result`; Gemini CLI, `response`.
    for key in ("result", "response"):
        value = report.get(key)
        if isinstance(value, str):
            return value
    return json.dumps(report, ensure_ascii=False)


def _json_usage(report: dict[str, Any]) -> Usage | None:
    stats = report.get("stats")
    if isinstance(stats, dict) and isinstance(stats.get("models"), dict):
        return _gemini_usage(stats["models"])
    counts = report.get("usage")
    counts = counts if isinstance(counts, dict) else {}
    return usage_of(
        _number(counts.get("input_tokens")),
        _number(counts.get("output_tokens")),
        _cost(report.get("total_cost_usd")),
    )


def _gemini_usage(models: dict[str, Any]) -> Usage | None:
    """Gemini CLI's `stats.models.<model>.tokens`, summed over its models (it reports no
    cost)."""
    totals: dict[str, float] = {}
    for model in models.values():
        tokens = model.get("tokens") if isinstance(model, dict) else None
        if isinstance(tokens, dict):
            counts = {"input": tokens.get("prompt"), "output": tokens.get("candidates")}
            _add(totals, counts, input="input", output="output")
    return _totals_usage(totals)


# --- jsonl -----------------------------------------------------------------------------


def read_jsonl(text: str) -> EngineReport | None:
    """Codex's and OpenCode's event streams: the last message the agent wrote, and the
    sum of the usage of every turn (Codex: `turn.completed`; OpenCode: `step_finish`,
    which also carries a cost). None when no line is an event either knows."""
    events = [event for line in text.splitlines() if (event := json_object(line)) is not None]
    final: str | None = None
    totals: dict[str, float] = {}
    seen = False
    for event in events:
        kind = event.get("type")
        if kind == "item.completed":  # Codex
            item = event.get("item") or {}
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                final, seen = item["text"], True
        elif kind == "turn.completed":  # Codex
            _add(totals, event.get("usage") or {}, input="input_tokens", output="output_tokens")
            seen = True
        elif kind == "text":  # OpenCode
            part = event.get("part") or {}
            if isinstance(part.get("text"), str):
                final, seen = part["text"], True
        elif kind == "step_finish":  # OpenCode
            part = event.get("part") or {}
            _add(totals, part.get("tokens") or {}, input="input", output="output")
            cost = _cost(part.get("cost"))
            if cost is not None:
                totals["cost"] = totals.get("cost", 0.0) + cost
            seen = True
    if not seen:
        return None
    return EngineReport(final, _totals_usage(totals))


def _add(totals: dict[str, float], counts: Any, *, input: str, output: str) -> None:
    if not isinstance(counts, dict):
        return
    for name, key in (("input", input), ("output", output)):
        value = _number(counts.get(key))
        if value is not None:
            totals[name] = totals.get(name, 0) + value


def _totals_usage(totals: dict[str, float]) -> Usage | None:
    tokens = {name: int(totals[name]) if name in totals else None for name in ("input", "output")}
    cost = totals.get("cost")
    # Finite costs can still add up past the largest float.
    return usage_of(tokens["input"], tokens["output"], cost if cost is None else _finite(cost))


# --- text (Aider) ----------------------------------------------------------------------

# "Tokens: 2.3k sent, 120 received. Cost: $0.0012 message, $0.0040 session."
AIDER_TOKENS = re.compile(r"^Tokens: ([\d.,]+)(k?) sent, ([\d.,]+)(k?) received\.", re.MULTILINE)
AIDER_SESSION_COST = re.compile(r"\$([\d.]+) session\.")


def read_aider(text: str) -> Usage | None:
    """Aider's token lines, summed (it rounds counts over a thousand to 0.1k, so those
    are approximate), and its last session cost."""
    sent = received = 0
    seen = False
    for sent_count, sent_k, received_count, received_k in AIDER_TOKENS.findall(text):
        # A line that only looks like one (`Tokens: 1.2.3 sent, ...`) is not counted.
        sent_tokens = _aider_count(sent_count, sent_k)
        received_tokens = _aider_count(received_count, received_k)
        if sent_tokens is None or received_tokens is None:
            continue
        sent, received, seen = sent + sent_tokens, received + received_tokens, True
    costs = [_float(cost) for cost in AIDER_SESSION_COST.findall(text)]
    cost = next((cost for cost in reversed(costs) if cost is not None), None)
    if not seen:
        return usage_of(None, None, cost)
    return usage_of(sent, received, cost)


def _aider_count(number: str, thousands: str) -> int | None:
    value = _float(number.replace(",", ""))
    if value is not None and thousands:
        value = _finite(value * 1000)
    return None if value is None else round(value)


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return _finite(value)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- helpers ---------------------------------------------------------------------------


def json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # float() of an int too large for a float raises rather than giving inf.
    try:
        return _finite(float(value))
    except OverflowError:
        return None
