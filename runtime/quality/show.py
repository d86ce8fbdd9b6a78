"""A self-contained HTML page of documents with their mentions highlighted.

Mentions may nest, overlap or cross (threshold decoding keeps them all), so the text
is cut at every mention boundary: each piece is shaded by how many mentions cover it
(nested mentions show darker), its hover title lists every covering mention with its
score, and each document lists its mentions below. Long documents are folded.
Everything is escaped: a document holding HTML or script shows as text.
"""

from __future__ import annotations

import html
from typing import Sequence

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
.doc{border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:1em 0}
.meta{color:#666;font-size:.85em;margin-bottom:.4em}
.text{white-space:pre-wrap;line-height:1.9}
mark{background:none;border-bottom:2px solid #c60;padding:0 1px}
mark.d1{background:#ffe8b0}mark.d2{background:#ffc870}mark.d3{background:#ffa040}
mark.d4{background:#ff7a1a;color:#fff}
ul.mentions{font-size:.85em;color:#444;columns:3}
details summary{cursor:pointer;color:#06c}
"""


def _segments(text: str, mentions: Sequence[dict]) -> str:
    cuts = sorted({0, len(text), *(m["start"] for m in mentions), *(m["end"] for m in mentions)})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        piece = html.escape(text[a:b])
        covering = [m for m in mentions if m["start"] <= a and b <= m["end"]]
        if not covering:
            out.append(piece)
            continue
        title = "; ".join(f"{m['text']} ({m['score']:.2f})" for m in covering)
        depth = min(len(covering), 4)
        out.append(f'<mark class="d{depth}" data-depth="{len(covering)}" title="{html.escape(title, quote=True)}">{piece}</mark>')
    return "".join(out)


def render_document(row_id: object, text: str | None, mentions: Sequence[dict], fold_chars: int = 1500) -> str:
    """One document's block; texts longer than ``fold_chars`` are folded under a summary."""
    text = text or ""
    body = f'<div class="text">{_segments(text, mentions)}</div>'
    if len(text) > fold_chars:
        preview = html.escape(text[:200])
        body = f"<details><summary>{preview}... ({len(text):,} characters, unfold)</summary>{body}</details>"
    items = "".join(f"<li>{html.escape(m['text'])} <small>[{m['start']}:{m['end']}] {m['score']:.2f}</small></li>"
                    for m in mentions)
    listing = f'<details{" open" if len(mentions) <= 20 else ""}><summary>{len(mentions)} mention(s)</summary>' \
              f'<ul class="mentions">{items}</ul></details>' if mentions else ""
    return (f'<div class="doc" data-row="{html.escape(str(row_id), quote=True)}">'
            f'<div class="meta">row {html.escape(str(row_id))} &middot; {len(mentions)} mention(s)</div>{body}'
            f'{listing}</div>')


def render_page(title: str, rows: Sequence[tuple[object, str | None, Sequence[dict]]], note: str = "",
                fold_chars: int = 1500) -> str:
    docs = "\n".join(render_document(*row, fold_chars=fold_chars) for row in rows)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=\"meta\">{html.escape(note)}</p>\n{docs}\n</body></html>\n")
