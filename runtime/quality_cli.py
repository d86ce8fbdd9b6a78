"""``tommer-eval`` and ``tommer-show``: check and look at tommer-annotate outputs, without the model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import InputError, TommerError

eval_app = typer.Typer(add_completion=False, rich_markup_mode=None,
                       help="Score tommer-annotate outputs against gold mentions, or compare two runs.")
show_app = typer.Typer(add_completion=False, rich_markup_mode=None,
                       help="Write a self-contained HTML page of documents with their mentions highlighted.")


def _files(source: str) -> tuple[list[Path], Path | None]:
    from .parquet_io import resolve_inputs

    return resolve_inputs(source)


def _read(path: Path, columns: list[str]) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    present = [c for c in columns if c in schema.names]
    table = pq.read_table(path, columns=present)
    return {c: table.column(c).to_pylist() for c in present}


def _spans(rows: list, path: Path, column: str) -> list[list[tuple[int, int]]]:
    try:
        return [[(int(m["start"]), int(m["end"])) for m in (doc or [])] for doc in rows]
    except (TypeError, KeyError) as exc:
        raise InputError(f"{path}: column {column!r} is not a list of {{start, end, ...}} spans ({exc})") from exc


def _aligned(first: dict, second: dict, f_path: Path, s_path: str, id_column: str | None,
             text_column: str) -> tuple[list[int], list[int], list[Any]]:
    """Row indices of ``first`` and ``second`` that belong together, and the row ids."""
    n1 = len(next(iter(first.values()), []))
    n2 = len(next(iter(second.values()), []))
    if id_column:
        for d, p in ((first, f_path), (second, s_path)):
            if id_column not in d:
                raise InputError(f"{p}: no id column {id_column!r}")
        where = {}
        for j, key in enumerate(second[id_column]):
            if key in where:
                raise InputError(f"{s_path}: id {key!r} appears twice in column {id_column!r}")
            where[key] = j
        missing = [k for k in first[id_column] if k not in where]
        if missing:
            raise InputError(f"{s_path}: {len(missing)} id(s) of {f_path} are missing, e.g. {missing[:5]}")
        left, right, ids = list(range(n1)), [where[k] for k in first[id_column]], list(first[id_column])
    else:
        if n1 != n2:
            raise InputError(f"{f_path} has {n1} rows and {s_path} has {n2}: they cannot be matched by position "
                             "(pass --id-column)")
        left, right, ids = list(range(n1)), list(range(n2)), list(range(n1))
    if text_column in first and text_column in second:
        for i, j, key in zip(left, right, ids):
            if first[text_column][i] != second[text_column][j]:
                raise InputError(f"row {key!r}: column {text_column!r} differs between {f_path} and {s_path} "
                                 f"({str(first[text_column][i])[:60]!r} vs {str(second[text_column][j])[:60]!r})")
    return left, right, ids


def _pairs(pred: str, other: str) -> list[tuple[Path, Path]]:
    files, root = _files(pred)
    if root is None:
        return [(files[0], Path(other))]
    return [(f, Path(other) / f.relative_to(root)) for f in files]


def _table(title: str, report: dict[str, Any]) -> str:
    lines = [title, f"  {'':18s} {'precision':>9s} {'recall':>9s} {'f1':>9s}"]
    for avg in ("micro", "macro"):
        for match in ("exact", "partial"):
            r = report[avg][match]
            lines.append(f"  {avg + ' ' + match:18s} {r['precision']:9.3f} {r['recall']:9.3f} {r['f1']:9.3f}")
    lines.append(f"  documents {report['documents']}, predicted {report['predicted']}, gold {report['gold']}")
    return "\n".join(lines)


@eval_app.command()
def evaluate(
    predictions: str = typer.Argument(..., help="tommer-annotate output: a Parquet file or a folder of them."),
    gold: Optional[str] = typer.Option(None, help="Gold: Parquet with a span column (same struct as 'mentions'; file or folder with the same relative names), or a CoNLL-style BIO file (.conll, .bio, .iob)."),
    against: Optional[str] = typer.Option(None, help="Another run's output: report exact-match rate, DICE and the rows that differ most."),
    sweep: bool = typer.Option(False, "--sweep", help="P/R/F1 per threshold from the 'candidates' column (tommer-annotate --keep-candidates), and a PNG precision-recall curve."),
    id_column: Optional[str] = typer.Option(None, help="Match rows by this column. [default: by position]"),
    text_column: str = typer.Option("text", help="Text column; when both files have it, rows whose texts differ are an error."),
    gold_column: str = typer.Option("mentions", help="Span column of a Parquet gold file."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON; its top level holds the micro exact-boundary precision, recall and f1. [default: none]"),
    plot: Optional[Path] = typer.Option(None, help="PNG of the precision-recall curve with --sweep. [default: <predictions>.pr.png]"),
    worst: int = typer.Option(10, help="Rows listed as differing most, with --against."),
) -> None:
    """Score PREDICTIONS against --gold (exact and partial boundaries), or compare them with --against."""
    from . import evaluate as ev

    if (gold is None) == (against is None):
        raise typer.BadParameter("give exactly one of --gold and --against")
    try:
        result = _agreement(predictions, against, id_column, text_column, worst) if against else \
            _gold(predictions, gold, id_column, text_column, gold_column, sweep, plot)
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if json_path:
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def _gold(predictions: str, gold: str, id_column, text_column, gold_column, sweep, plot) -> dict[str, Any]:
    from . import evaluate as ev
    from .bio import read_bio

    per_file, all_pred, all_gold, all_cands, floors = {}, [], [], [], []
    for p_path, g_path in _pairs(predictions, gold):
        pred = _read(p_path, [c for c in (id_column, text_column, "mentions", "candidates") if c])
        if "mentions" not in pred:
            raise InputError(f"{p_path}: no 'mentions' column (is it a tommer-annotate output?)")
        if g_path.suffix.lower() in (".conll", ".bio", ".iob", ".txt"):
            texts, spans = read_bio(g_path)
            g = {text_column: texts, "spans": spans}
            left, right, _ = _aligned(pred, g, p_path, str(g_path), None, text_column)
            golds = [spans[j] for j in right]
        else:
            g = _read(g_path, [c for c in (id_column, text_column, gold_column) if c])
            if gold_column not in g:
                raise InputError(f"{g_path}: no gold column {gold_column!r}; pass --gold-column")
            left, right, _ = _aligned(pred, g, p_path, str(g_path), id_column, text_column)
            g_spans = _spans(g[gold_column], g_path, gold_column)
            golds = [g_spans[j] for j in right]
        preds = [_spans(pred["mentions"], p_path, "mentions")[i] for i in left]
        per_file[str(p_path)] = ev.score(preds, golds)
        typer.echo(_table(f"{p_path} against {g_path}", per_file[str(p_path)]))
        all_pred += preds
        all_gold += golds
        if sweep:
            if "candidates" not in pred:
                raise InputError(f"{p_path}: --sweep needs a 'candidates' column: run tommer-annotate with --keep-candidates FLOOR")
            all_cands += [[(m["start"], m["end"], m["score"]) for m in (pred["candidates"][i] or [])] for i in left]
            floors.append(_candidate_floor(p_path))
    result = ev.score(all_pred, all_gold)
    result["files"] = per_file
    if len(per_file) > 1:
        typer.echo(_table("all files", result))
    if sweep:
        floor = max(floors, default=0.0)  # below the --keep-candidates floor the figures would be wrong
        thresholds = [t / 100 for t in range(5, 100, 5) if t / 100 >= floor - 1e-9]
        result["sweep"] = ev.sweep(all_cands, all_gold, thresholds)
        typer.echo("  threshold  precision  recall     f1")
        for row in result["sweep"]:
            typer.echo(f"  {row['threshold']:9.2f}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:6.3f}")
        target = plot or Path(str(Path(predictions)).removesuffix(".parquet") + ".pr.png")
        if _pr_curve(result["sweep"], target):
            typer.echo(f"wrote {target}")
    return result


def _candidate_floor(path: Path) -> float:
    """The --keep-candidates floor recorded by tommer-annotate in the file's metadata (0 if absent)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    try:
        return float(json.loads(meta[b"tommer"]).get("keep_candidates") or 0.0)
    except (KeyError, ValueError):
        return 0.0


def _pr_curve(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        typer.echo("matplotlib is not installed (pip install 'tommer[bench]'): no PNG written", err=True)
        return False
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([r["recall"] for r in rows], [r["precision"] for r in rows], marker="o")
    for r in rows[:: max(1, len(rows) // 6)]:
        ax.annotate(f"{r['threshold']:.2f}", (r["recall"], r["precision"]), fontsize=7)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall over thresholds (exact boundaries)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def _agreement(predictions: str, against: str, id_column, text_column, worst: int) -> dict[str, Any]:
    from . import evaluate as ev

    firsts, seconds, ids = [], [], []
    for p_path, o_path in _pairs(predictions, against):
        first = _read(p_path, [c for c in (id_column, text_column, "mentions") if c])
        second = _read(o_path, [c for c in (id_column, text_column, "mentions") if c])
        left, right, keys = _aligned(first, second, p_path, str(o_path), id_column, text_column)
        a, b = _spans(first["mentions"], p_path, "mentions"), _spans(second["mentions"], o_path, "mentions")
        firsts += [a[i] for i in left]
        seconds += [b[j] for j in right]
        ids += [f"{p_path.name}:{k}" for k in keys]
    result = ev.agreement(firsts, seconds, ids, worst=worst)
    typer.echo(f"{predictions} vs {against}: {result['documents']} documents, exact-match rate "
               f"{result['exact_match_rate']:.3f}, DICE {result['dice']:.3f}")
    for row in result["most_different"]:
        typer.echo(f"  {row['row']}: DICE {row['dice']:.3f}, only first {row['only_first'][:5]}, only second {row['only_second'][:5]}")
    return result


@show_app.command()
def show(
    predictions: str = typer.Argument(..., help="tommer-annotate output (Parquet file)."),
    output: Path = typer.Option(Path("mentions.html"), "--output", "-o", help="HTML file to write."),
    rows: int = typer.Option(50, help="How many documents to show (the first ones, unless --sample)."),
    sample: bool = typer.Option(False, "--sample", help="Pick the documents at random (seeded) instead of the first ones."),
    seed: int = typer.Option(0, help="Seed of --sample."),
    min_mentions: int = typer.Option(0, help="Only documents with at least this many mentions."),
    max_mentions: Optional[int] = typer.Option(None, help="Only documents with at most this many mentions. [default: no limit]"),
    text_column: str = typer.Option("text", help="Column holding the text (the output keeps it unless --columns dropped it)."),
    id_column: Optional[str] = typer.Option(None, help="Column shown as the row's name. [default: the row number]"),
    fold_chars: int = typer.Option(1500, help="Fold documents longer than this many characters."),
) -> None:
    """Highlight the mentions of PREDICTIONS in a self-contained HTML page (no network resources)."""
    import random

    from .show import render_page

    try:
        path = Path(predictions)
        data = _read(path, [c for c in (text_column, "mentions", id_column) if c])
        if "mentions" not in data or text_column not in data:
            raise InputError(f"{path}: needs columns 'mentions' and {text_column!r} (annotate without dropping the text, "
                             "or pass --text-column)")
        keep = [i for i, m in enumerate(data["mentions"])
                if len(m or []) >= min_mentions and (max_mentions is None or len(m or []) <= max_mentions)]
        chosen = sorted(random.Random(seed).sample(keep, min(rows, len(keep)))) if sample else keep[:rows]
        names = data[id_column] if id_column else list(range(len(data["mentions"])))
        page = render_page(f"tommer mentions: {path.name}",
                           [(names[i], data[text_column][i], data["mentions"][i] or []) for i in chosen],
                           note=f"{len(chosen)} of {len(data['mentions'])} documents; hover a highlight for its mentions and scores")
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    output.write_text(page, encoding="utf-8")
    typer.echo(f"wrote {output} ({len(chosen)} documents)")


def eval_main() -> None:
    eval_app(prog_name="tommer-eval")


def show_main() -> None:
    show_app(prog_name="tommer-show")


if __name__ == "__main__":
    sys.exit(eval_main() if sys.argv[1:2] != ["show"] else show_main())
