"""Quality figures from tommer-annotate outputs: against gold mentions, and between two runs."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Spans = Sequence[tuple[int, int]]


def _prf(tp_p: float, n_pred: int, tp_g: float, n_gold: int) -> dict[str, float]:
    """Precision is 1 when nothing was predicted (nothing wrong), recall 1 when nothing was to find."""
    precision = tp_p / n_pred if n_pred else 1.0
    recall = tp_g / n_gold if n_gold else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _overlaps(a: tuple[int, int], spans: Spans | set[tuple[int, int]]) -> bool:
    return any(a[0] < b[1] and b[0] < a[1] for b in spans)


def doc_counts(pred: Spans, gold: Spans) -> dict[str, int]:
    """Matches of one document: exact boundaries, and partial (any character overlap)."""
    p, g = set(pred), set(gold)
    return {"pred": len(p), "gold": len(g), "exact": len(p & g),
            "partial_pred": sum(_overlaps(s, g) for s in p),  # predicted spans touching a gold span
            "partial_gold": sum(_overlaps(s, p) for s in g)}  # gold spans touched by a prediction


@dataclass
class Scores:
    """Micro and macro P/R/F1, exact and partial, over documents."""

    counts: list[dict[str, int]]

    def report(self) -> dict[str, Any]:
        total = {k: sum(c[k] for c in self.counts) for k in ("pred", "gold", "exact", "partial_pred", "partial_gold")}
        micro_exact = _prf(total["exact"], total["pred"], total["exact"], total["gold"])
        micro_partial = _prf(total["partial_pred"], total["pred"], total["partial_gold"], total["gold"])
        per_doc_exact = [_prf(c["exact"], c["pred"], c["exact"], c["gold"]) for c in self.counts]
        per_doc_partial = [_prf(c["partial_pred"], c["pred"], c["partial_gold"], c["gold"]) for c in self.counts]

        def macro(rows):
            return {k: float(np.mean([r[k] for r in rows])) if rows else 0.0 for k in ("precision", "recall", "f1")}

        return {**micro_exact, "documents": len(self.counts), "predicted": total["pred"], "gold": total["gold"],
                "micro": {"exact": micro_exact, "partial": micro_partial},
                "macro": {"exact": macro(per_doc_exact), "partial": macro(per_doc_partial)}}


def score(preds: Sequence[Spans], golds: Sequence[Spans]) -> dict[str, Any]:
    """P/R/F1 of predictions against gold; top-level keys are the micro exact-boundary figures."""
    return Scores([doc_counts(p, g) for p, g in zip(preds, golds)]).report()


def dice(a: set, b: set) -> float:
    """DICE of two span sets; two empty sets agree fully (1.0)."""
    return 1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b))


@dataclass(frozen=True)
class Agreement:
    """Span agreement of two runs over the same documents.

    The one implementation: the exporter's validation, ``tommer-eval --against`` and
    ``tommer-bench`` all call ``span_agreement``.
    """

    documents: int
    exact_match_rate: float  # share of documents whose span sets are equal (1.0 with no documents)
    dice: float  # micro: over every span of every document, a span counting only in its own document
    per_document: list[float]  # DICE of each document's two span sets
    spans_first: int  # distinct spans of each run, summed over documents
    spans_second: int

    def figures(self) -> dict[str, float]:
        """The two headline figures, as manifests, bench results and eval reports write them."""
        return {"exact_match_rate": self.exact_match_rate, "dice": self.dice}


def span_agreement(first: Sequence[Iterable[Hashable]], second: Sequence[Iterable[Hashable]]) -> Agreement:
    """Exact-match rate of per-document span sets, and DICE micro over all spans and per document.

    Documents are matched by position; spans (``(start, end)`` or any hashable) are compared as
    sets within each document. Two empty documents agree fully.
    """
    if len(first) != len(second):
        raise ValueError(f"span agreement needs the same documents in both runs: {len(first)} and {len(second)}")
    per_doc, same, common, n_first, n_second = [], 0, 0, 0, 0
    for spans_a, spans_b in zip(first, second):
        a, b = set(spans_a), set(spans_b)
        both = len(a & b)
        per_doc.append(1.0 if not a and not b else 2 * both / (len(a) + len(b)))
        same += a == b
        common, n_first, n_second = common + both, n_first + len(a), n_second + len(b)
    return Agreement(documents=len(per_doc), exact_match_rate=same / len(per_doc) if per_doc else 1.0,
                     dice=2 * common / (n_first + n_second) if n_first + n_second else 1.0,
                     per_document=per_doc, spans_first=n_first, spans_second=n_second)


def agreement(first: Sequence[Spans], second: Sequence[Spans], ids: Sequence[object],
              worst: int = 10) -> dict[str, Any]:
    """``span_agreement`` of two runs, and the ``worst`` documents that differ most (lowest DICE)."""
    found = span_agreement(first, second)
    per_doc = found.per_document
    order = np.argsort(per_doc, kind="stable")[:worst]
    return {"documents": found.documents, **found.figures(),
            "most_different": [{"row": ids[i], "dice": per_doc[i], "only_first": sorted(set(first[i]) - set(second[i])),
                                "only_second": sorted(set(second[i]) - set(first[i]))} for i in order if per_doc[i] < 1.0]}


def sweep(candidates: Sequence[Sequence[tuple[int, int, float]]], golds: Sequence[Spans],
          thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Micro exact P/R/F1 at each threshold, keeping candidates with score > threshold."""
    rows = []
    for t in thresholds:
        preds = [[(s, e) for s, e, p in doc if p > t] for doc in candidates]
        r = score(preds, golds)
        rows.append({"threshold": float(t), "precision": r["precision"], "recall": r["recall"], "f1": r["f1"]})
    return rows
