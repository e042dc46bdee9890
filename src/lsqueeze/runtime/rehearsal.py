"""A rehearsal's run options, as the jobs of a rehearsal see them (`lsqueeze rehearse`).

A rehearsal runs a preset's real DAG at toy scale. What it shrinks through the preset (training
steps, batch sizes, test images) changes the jobs' parameters like any preset edit; what it
shrinks at run time reaches the jobs here, as the environment variable LSQUEEZE_REHEARSAL that the
workflow sets only for a rehearsal preset (its `rehearsal:` section, workflow/rules/common.smk):

- the attacks' steps and restarts are capped (`attack_steps`, `attack_restarts`), so the attack
  ids, the tables and the claims that select columns by steps ("steps >= 100") stay the real
  preset's, while each job runs a few steps;
- every table, figure and claims file carries the banner (`banner`), where a reader cannot miss
  it: the first line of a Markdown or HTML page, a column and the schema metadata of a Parquet
  file, a red line across a figure.

Nothing here changes a number of a real run: without the variable every function is the identity,
and this module is plumbing for the code fingerprints (lsqueeze.runtime.fingerprint).
"""

from __future__ import annotations

import html
import json
import os
import sys

ENV = "LSQUEEZE_REHEARSAL"
BANNER = "rehearsal: the numbers are meaningless"


def settings() -> dict | None:
    """The rehearsal's run options, or None outside a rehearsal."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{ENV}: expected a JSON object, got {text[:60]!r}")
    return value


def banner() -> str | None:
    s = settings()
    return None if s is None else str(s.get("banner") or BANNER)


def cap_attack(record: dict) -> dict:
    """An attack record (id, paper units, pixel units) with its pixel steps and restarts capped
    in a rehearsal, said on stderr (the job's log); unchanged elsewhere. The paper units and the
    id stay the preset's: the tables and claims read those."""
    s = settings()
    if s is None or not isinstance(record, dict) or "pixel" not in record:
        return record
    pixel = dict(record["pixel"])
    changed = []
    for key, cap in (("steps", s.get("attack_steps")), ("restarts", s.get("attack_restarts"))):
        value = pixel.get(key)
        if cap and isinstance(value, (int, float)) and value > cap:
            pixel[key] = int(cap)
            changed.append(f"{key} {int(value)} -> {int(cap)}")
    if changed:
        print(f"{banner()}: attack {record.get('id')}: {', '.join(changed)}", file=sys.stderr)
    return {**record, "pixel": pixel}


def stamp_markdown(text: str) -> str:
    b = banner()
    return text if b is None else f"# {b.upper()}\n\n> **{b}**\n\n{text}"


def stamp_html(text: str) -> str:
    """The banner as the first thing in the page's body (or the page's start)."""
    b = banner()
    if b is None:
        return text
    line = (f'<p style="color:#b00;font-size:150%;font-weight:bold;border:3px solid #b00;'
            f'padding:6px">{html.escape(b.upper())}</p>')
    at = text.find("<body")
    if at < 0:
        return line + text
    end = text.find(">", at) + 1
    return text[:end] + line + text[end:]


def stamp_frame(frame):
    """A DataFrame to be written as Parquet: a first column `rehearsal` holding the banner in every
    row, and the banner in its attrs (schema metadata); the frame itself outside a rehearsal."""
    b = banner()
    if b is None:
        return frame
    frame = frame.copy()
    if "rehearsal" not in frame.columns:
        frame.insert(0, "rehearsal", b)
    frame.attrs["rehearsal"] = b
    return frame


def stamp_figure(fig) -> None:
    """A red line across the top and a watermark across a matplotlib figure."""
    b = banner()
    if b is None:
        return
    fig.text(0.5, 1.0, b.upper(), ha="center", va="bottom", color="#b00", fontsize=14,
             fontweight="bold")
    fig.text(0.5, 0.5, b, ha="center", va="center", rotation=25, color="#b00", alpha=0.25,
             fontsize=30, fontweight="bold")
