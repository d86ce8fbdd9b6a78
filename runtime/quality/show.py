"""A self-contained HTML page of documents with their mentions highlighted.

Mentions may nest, overlap or cross (threshold decoding keeps them all), so the text
is cut at every mention boundary: each piece is shaded by how many mentions cover it
(nested mentions show darker) and each document lists its mentions below. Long documents
are folded. Everything is escaped: a document holding HTML or script shows as text.

The hover is built from data, once per document: the document's mentions are one JSON array
(``[start, end, score]``, in a ``<script type="application/json">``; a mention's text is cut from
the document's, by code points as Python counts them), each piece carries
only its offsets (``data-a``, ``data-b``), and a small script sets the piece's title (every
mention covering it, with its score) when the pointer first reaches it. So the page grows with
the mentions, not with pieces times covering mentions. The list of mentions below each document
is built from the same array when it is unfolded (at load for the short lists that start open).
Opened as ``page.html#titles``, the script sets every title at load (what the rendering test
checks).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

# marks sit flush in the text: no padding or margin, so a boundary inside a word shows no gap
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
.doc{border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:1em 0}
.meta{color:#666;font-size:.85em;margin-bottom:.4em}
.text{white-space:pre-wrap;line-height:1.9}
mark{background:none;border-bottom:2px solid #c60;padding:0;margin:0}
mark.d1{background:#ffe8b0}mark.d2{background:#ffc870}mark.d3{background:#ffa040}
mark.d4{background:#ff7a1a;color:#fff}
ul.mentions{font-size:.85em;color:#444;columns:3}
details summary{cursor:pointer;color:#06c}
"""

# The title of a piece: every mention of its document covering [data-a, data-b), as "text (score)".
SCRIPT = """
(function(){
function mentionsOf(el){var d=el.closest('.doc');if(!d)return[];
 if(!d._m){var s=d.querySelector('script.mentions'),x=d.querySelector('.text'),c=Array.from(x?x.textContent:'');
  d._m=(s?JSON.parse(s.textContent):[]).map(function(m){return[m[0],m[1],m[2],c.slice(m[0],m[1]).join('')];});}
 return d._m;}
function titleOf(el){var a=+el.dataset.a,b=+el.dataset.b;
 return mentionsOf(el).filter(function(m){return m[0]<=a&&b<=m[1];})
  .map(function(m){return m[3]+' ('+m[2].toFixed(2)+')';}).join('; ');}
function fill(el){if(!el.title)el.title=titleOf(el);}
document.addEventListener('mouseover',function(e){var t=e.target;
 if(t&&t.tagName==='MARK'&&t.dataset.a!==undefined)fill(t);});
function list(det){var ul=det.querySelector('ul.mentions');if(!ul||ul.dataset.done)return;ul.dataset.done='1';
 mentionsOf(det).forEach(function(m){var li=document.createElement('li'),s=document.createElement('small');
  li.textContent=m[3]+' ';s.textContent='['+m[0]+':'+m[1]+'] '+m[2].toFixed(2);li.appendChild(s);ul.appendChild(li);});}
document.addEventListener('toggle',function(e){var t=e.target;
 if(t&&t.classList&&t.classList.contains('list')&&t.open)list(t);},true);
document.querySelectorAll('details.list[open]').forEach(list);
if(location.hash==='#titles'){document.querySelectorAll('mark[data-a]').forEach(fill);}
})();
"""


def _segments(text: str, mentions: Sequence[dict]) -> str:
    """The text cut at every mention boundary; covered pieces are marks with their offsets and depth.

    The depth of each piece comes from a sweep over the sorted boundaries (no scan of every mention
    per piece)."""
    cuts = sorted({0, len(text), *(m["start"] for m in mentions), *(m["end"] for m in mentions)})
    delta: dict[int, int] = {}
    for m in mentions:
        if m["end"] > m["start"]:
            delta[m["start"]] = delta.get(m["start"], 0) + 1
            delta[m["end"]] = delta.get(m["end"], 0) - 1
    out, depth = [], 0
    for a, b in zip(cuts, cuts[1:]):
        depth += delta.get(a, 0)
        piece = html.escape(text[a:b])
        if depth <= 0:
            out.append(piece)
            continue
        out.append(f'<mark class="d{min(depth, 4)}" data-depth="{depth}" data-a="{a}" data-b="{b}">{piece}</mark>')
    return "".join(out)


def _data(mentions: Sequence[dict]) -> str:
    """The document's mentions as a JSON array of numbers (safe inside ``<script>``)."""
    rows = [[int(m["start"]), int(m["end"]), round(float(m["score"]), 3)] for m in mentions]
    return json.dumps(rows, separators=(",", ":"))  # numbers only: nothing to escape


def render_document(row_id: object, text: str | None, mentions: Sequence[dict], fold_chars: int = 1500) -> str:
    """One document's block; texts longer than ``fold_chars`` are folded under a summary."""
    text = text or ""
    body = f'<div class="text">{_segments(text, mentions)}</div>'
    if len(text) > fold_chars:
        preview = html.escape(text[:200])
        body = f"<details><summary>{preview}... ({len(text):,} characters, unfold)</summary>{body}</details>"
    listing = f'<details class="list"{" open" if len(mentions) <= 20 else ""}><summary>{len(mentions)} mention(s)' \
              '</summary><ul class="mentions"></ul></details>' if mentions else ""  # filled from the data
    data = f'<script type="application/json" class="mentions">{_data(mentions)}</script>' if mentions else ""
    return (f'<div class="doc" data-row="{html.escape(str(row_id), quote=True)}">'
            f'<div class="meta">row {html.escape(str(row_id))} &middot; {len(mentions)} mention(s)</div>{body}'
            f'{listing}{data}</div>')


def render_page(title: str, rows: Sequence[tuple[object, str | None, Sequence[dict]]], note: str = "",
                fold_chars: int = 1500) -> str:
    docs = "\n".join(render_document(*row, fold_chars=fold_chars) for row in rows)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=\"meta\">{html.escape(note)}</p>\n{docs}\n<script>{SCRIPT}</script>\n</body></html>\n")


def choose_documents(counts: Sequence[int], rows: int, sample: int | None, seed: int, min_mentions: int,
                     max_mentions: int | None, file: str) -> tuple[list[int], str]:
    """The row numbers to show (in file order) and a note on how they were chosen.

    Documents are kept by their mention count (``--min-mentions``, ``--max-mentions``), then the
    first ``rows`` are taken, or ``sample`` drawn at random (seeded). Nothing left to show is an
    ``InputError`` that says how many documents had how many mentions.
    """
    import random

    from ..errors import InputError

    if not counts:
        raise InputError(f"{file}: the file has no rows: nothing to show")
    keep = [i for i, n in enumerate(counts) if n >= min_mentions and (max_mentions is None or n <= max_mentions)]
    if not keep:
        wanted = f"at least {min_mentions}" + (f" and at most {max_mentions}" if max_mentions is not None else "")
        ordered = sorted(counts)
        raise InputError(f"{file}: no document has {wanted} mentions (--min-mentions/--max-mentions): its "
                         f"{len(counts):,} documents have {ordered[0]:,} to {ordered[-1]:,} mentions (median "
                         f"{ordered[len(ordered) // 2]:,}, {sum(1 for n in counts if n == 0):,} with none); "
                         "lower --min-mentions or raise --max-mentions")
    filtered = "" if len(keep) == len(counts) else f" with {min_mentions}" + (
        f" to {max_mentions}" if max_mentions is not None else " or more") + " mentions"
    if sample is not None:
        chosen = sorted(random.Random(seed).sample(keep, min(sample, len(keep))))
        how = f"drawn at random (--sample {sample} --seed {seed})"
        if sample > len(keep):
            how += f"; only {len(keep):,} document(s){filtered} to draw from, all shown"
    else:
        chosen = keep[:rows]
        how = "the first ones"
    return chosen, f"{len(chosen):,} of {len(counts):,} documents{filtered}, {how}"
