"""``tommer-eval`` and ``tommer-show``: check and look at tommer-annotate outputs, without the model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import InputError, TommerError
from ..io.locations import Location
from ..quality.bio import SUFFIXES as BIO_SUFFIXES
from .common import Command, version_option

eval_app = typer.Typer(add_completion=False, rich_markup_mode=None,
                       help="Score tommer-annotate outputs against gold mentions, or compare two runs.")
show_app = typer.Typer(add_completion=False, rich_markup_mode=None,
                       help="Write a self-contained HTML page of documents with their mentions highlighted.")


def _files(source: str) -> tuple[list, Location | None]:
    from ..io.inputs import resolve_inputs

    return resolve_inputs(source)  # Path or RemotePath: both read by open_input


def _read(path: Path, columns: list[str], required: dict[str, str] | None = None) -> dict[str, list]:
    """The ``columns`` of ``path`` that it has, as Python lists.

    ``required`` maps columns that must be there to the option that named them (``--id-column``):
    a missing one is an ``InputError`` naming the file, the column and the columns it has.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    for column, option in (required or {}).items():
        if column not in schema.names:
            raise InputError(f"{path}: no column {column!r} ({option}); its columns: {', '.join(schema.names)}")
    present = [c for c in dict.fromkeys(columns) if c in schema.names]
    table = pq.read_table(path, columns=present)
    return {c: table.column(c).to_pylist() for c in present}


def _spans(rows: list, path: Path, column: str) -> list[list[tuple[int, int]]]:
    try:
        return [[(int(m["start"]), int(m["end"])) for m in (doc or [])] for doc in rows]
    except (TypeError, KeyError) as exc:
        raise InputError(f"{path}: column {column!r} is not a list of {{start, end, ...}} spans ({exc})") from exc


def _rows_by_id(keys: list, path: Path | str, id_column: str) -> dict[Any, int]:
    """Row number of each id (one pass); an id on two rows is an error naming it and its rows."""
    where: dict[Any, int] = {}
    for row, key in enumerate(keys):
        try:
            first = where.setdefault(key, row)
        except TypeError as exc:
            raise InputError(f"{path}: column {id_column!r} holds {type(key).__name__} values, which cannot be "
                             "row ids (use a column of numbers or strings)") from exc
        if first != row:
            again = [r for r, k in enumerate(keys) if k == key]  # only on the error path
            raise InputError(f"{path}: id {key!r} of column {id_column!r} is on more than one row (rows "
                             f"{', '.join(map(str, again[:10]))}{', ...' if len(again) > 10 else ''}): "
                             "ids must be unique to match rows")
    return where


def _aligned(first: dict, second: dict, f_path: Path, s_path: str, id_column: str | None,
             text_column: str, unmatched: str = "pass --id-column") -> tuple[list[int], list[int], list[Any]]:
    """Row indices of ``first`` and ``second`` that belong together, and the row ids (linear time).

    ``unmatched``: the advice when the row counts differ and there is no id column."""
    n1 = len(next(iter(first.values()), []))
    n2 = len(next(iter(second.values()), []))
    if id_column:
        for d, p in ((first, f_path), (second, s_path)):
            if id_column not in d:
                raise InputError(f"{p}: no column {id_column!r} (--id-column)")
        _rows_by_id(first[id_column], f_path, id_column)
        where = _rows_by_id(second[id_column], s_path, id_column)
        missing = [k for k in first[id_column] if k not in where]
        if missing:
            raise InputError(f"{s_path}: {len(missing)} id(s) of {f_path} are missing, e.g. {missing[:5]}")
        if n2 > n1:
            typer.echo(f"note: {n2 - n1} row(s) of {s_path} have no row in {f_path} and are not counted", err=True)
        left, right, ids = list(range(n1)), [where[k] for k in first[id_column]], list(first[id_column])
    else:
        if n1 != n2:
            raise InputError(f"{f_path} has {n1} rows and {s_path} has {n2}: they cannot be matched by position "
                             f"({unmatched})")
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


@eval_app.command(cls=Command)
def evaluate(
    predictions: str = typer.Argument(..., help="tommer-annotate output: a Parquet file or a folder of them."),
    gold: Optional[str] = typer.Option(None, help=f"Gold: Parquet with a span column (same struct as 'mentions'; file or folder with the same relative names), or a CoNLL-style BIO file ({', '.join(BIO_SUFFIXES)}). [default: none]"),
    against: Optional[str] = typer.Option(None, help="Another run's output: report exact-match rate, DICE and the rows that differ most. [default: none]"),
    sweep: bool = typer.Option(False, "--sweep", help="P/R/F1 per threshold from the 'candidates' column (tommer-annotate --keep-candidates FLOOR; thresholds from FLOOR up), and a PNG precision-recall curve."),
    id_column: Optional[str] = typer.Option(None, help="Match rows by this column (its values must be unique in each file). [default: by position]"),
    text_column: str = typer.Option("text", help="Text column; when both files have it, rows whose texts differ are an error."),
    gold_column: str = typer.Option("mentions", help="Span column of a Parquet gold file."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON; its top level holds the micro exact-boundary precision, recall and f1. [default: none]"),
    plot: Optional[Path] = typer.Option(None, help="PNG of the precision-recall curve with --sweep. [default: <predictions>.pr.png]"),
    worst: int = typer.Option(10, help="Rows listed as differing most, with --against."),
    version: Optional[bool] = version_option(),
) -> None:
    """Score PREDICTIONS against --gold (exact and partial boundaries), or compare them with --against."""
    if (gold is None) == (against is None):
        raise typer.BadParameter("give exactly one of --gold and --against")
    try:
        if against is not None:
            result = _agreement(predictions, against, id_column, text_column, worst)
        else:
            assert gold is not None  # exactly one of --gold and --against
            result = _gold(predictions, gold, id_column, text_column, gold_column, sweep, plot)
        if json_path:
            try:
                json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
            except OSError as exc:
                raise InputError(f"--json {json_path}: cannot write it ({exc})") from exc
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


def _gold(predictions: str, gold: str, id_column, text_column, gold_column, sweep, plot) -> dict[str, Any]:
    from ..quality import evaluate as ev
    from ..quality.bio import read_bio, rows_advice

    per_file, all_pred, all_gold, all_cands, floors = {}, [], [], [], []
    for p_path, g_path in _pairs(predictions, gold):
        bio = g_path.suffix.lower() in BIO_SUFFIXES
        if bio and id_column:
            raise InputError(f"{g_path}: a BIO file has no ids, its sentences are matched by position: drop "
                             f"--id-column ({rows_advice(g_path)})")
        pred = _read(p_path, [c for c in (id_column, text_column, "mentions", "candidates") if c],
                     {id_column: "--id-column"} if id_column else None)
        if "mentions" not in pred:
            raise InputError(f"{p_path}: no 'mentions' column (is it a tommer-annotate output?)")
        if bio:
            texts, spans = read_bio(g_path)
            g: dict[str, list] = {text_column: texts, "spans": spans}
            left, right, _ = _aligned(pred, g, p_path, str(g_path), None, text_column, rows_advice(g_path))
            golds = [spans[j] for j in right]
        else:
            g = _read(g_path, [c for c in (id_column, text_column, gold_column) if c],
                      {id_column: "--id-column"} if id_column else None)
            if gold_column not in g:
                raise InputError(f"{g_path}: no gold column {gold_column!r}; pass --gold-column")
            left, right, _ = _aligned(pred, g, p_path, str(g_path), id_column, text_column)
            g_spans = _spans(g[gold_column], g_path, gold_column)
            golds = [g_spans[j] for j in right]
        p_spans = _spans(pred["mentions"], p_path, "mentions")  # parsed once, then picked by row
        preds = [p_spans[i] for i in left]
        per_file[str(p_path)] = ev.score(preds, golds)
        typer.echo(_table(f"{p_path} against {g_path}", per_file[str(p_path)]))
        all_pred += preds
        all_gold += golds
        if sweep:
            cands, floor = _candidates(p_path, pred)
            all_cands += [cands[i] for i in left]
            floors.append(floor)
    result = ev.score(all_pred, all_gold)
    result["files"] = per_file
    if len(per_file) > 1:
        typer.echo(_table("all files", result))
    if sweep:
        floor = max(floors, default=0.0)  # below the highest floor some file's candidates are missing
        thresholds = [t / 100 for t in range(5, 100, 5) if t / 100 >= floor - 1e-9]
        result["sweep_floor"] = floor
        result["sweep"] = ev.sweep(all_cands, all_gold, thresholds)
        typer.echo(f"  sweep from the candidates' floor {floor:g} (--keep-candidates)")
        typer.echo("  threshold  precision  recall     f1")
        for row in result["sweep"]:
            typer.echo(f"  {row['threshold']:9.2f}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:6.3f}")
        target = plot or Path(str(Path(predictions)).removesuffix(".parquet") + ".pr.png")
        if _pr_curve(result["sweep"], target):
            typer.echo(f"wrote {target}")
    return result


HOW_TO_KEEP = ("re-run tommer-annotate with --keep-candidates FLOOR (e.g. --keep-candidates 0.05 keeps every span "
               "scored above 0.05, and the sweep starts there)")


def _candidates(path: Path, pred: dict[str, list]) -> tuple[list[list[tuple[int, int, float]]], float]:
    """The candidate spans of each row and the floor they were kept above.

    A file written without ``--keep-candidates`` has no candidates: an error saying how to get
    them. When the floor is not recorded (tables written by the Python API, Ray, other tools),
    the lowest candidate score is used: every span above it is known to be there.
    """
    if "candidates" not in pred:
        raise InputError(f"{path}: --sweep needs the candidate spans, and this output has no 'candidates' column "
                         f"(it was written without --keep-candidates): {HOW_TO_KEEP}")
    try:
        cands = [[(int(m["start"]), int(m["end"]), float(m["score"])) for m in (doc or [])] for doc in pred["candidates"]]
    except (TypeError, KeyError) as exc:
        raise InputError(f"{path}: column 'candidates' is not a list of {{start, end, score, ...}} spans ({exc})") from exc
    floor = _candidate_floor(path)
    if floor is None:
        scores = [p for doc in cands for _, _, p in doc]
        if not scores:
            raise InputError(f"{path}: the 'candidates' column is empty and its --keep-candidates floor is not "
                             f"recorded in the file's metadata: nothing to sweep; {HOW_TO_KEEP}")
        floor = min(scores)
        typer.echo(f"note: {path} does not record its --keep-candidates floor; the sweep starts at its lowest "
                   f"candidate score {floor:.3f} (spans scored below may be missing)", err=True)
    return cands, floor


def _candidate_floor(path: Path) -> float | None:
    """The --keep-candidates floor tommer-annotate recorded in the file's metadata (None if not recorded)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    try:
        floor = json.loads(meta[b"tommer"]).get("keep_candidates")
        return None if floor is None else float(floor)
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


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
    plt.close(fig)
    return True


def _agreement(predictions: str, against: str, id_column, text_column, worst: int) -> dict[str, Any]:
    from ..quality import evaluate as ev

    firsts, seconds, ids = [], [], []
    required = {id_column: "--id-column"} if id_column else None
    for p_path, o_path in _pairs(predictions, against):
        first = _read(p_path, [c for c in (id_column, text_column, "mentions") if c], required)
        second = _read(o_path, [c for c in (id_column, text_column, "mentions") if c], required)
        for d, path in ((first, p_path), (second, o_path)):
            if "mentions" not in d:
                raise InputError(f"{path}: no 'mentions' column (is it a tommer-annotate output?)")
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


@show_app.command(cls=Command)
def show(
    predictions: str = typer.Argument(..., help="tommer-annotate output (Parquet file)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file to write. [default: beside PREDICTIONS, its name ending in .html instead of .parquet]"),
    rows: Optional[int] = typer.Option(None, help="How many documents to show: the first ones (after --min-mentions/--max-mentions). [default: 50]"),
    sample: Optional[int] = typer.Option(None, help="Show N documents drawn uniformly at random without replacement (seeded by --seed), in file order, instead of the first --rows; as tommer-annotate --sample N. [default: off]"),
    seed: int = typer.Option(0, help="Random seed of --sample: the same file and seed show the same documents."),
    min_mentions: int = typer.Option(0, help="Only documents with at least this many mentions."),
    max_mentions: Optional[int] = typer.Option(None, help="Only documents with at most this many mentions. [default: no limit]"),
    text_column: Optional[str] = typer.Option(None, help="Column holding the text; a dotted name reaches a nested field (meta.body). [default: the one tommer-annotate read, recorded in the output; else 'text']"),
    id_column: Optional[str] = typer.Option(None, help="Column shown as the row's name. [default: the row number]"),
    fold_chars: int = typer.Option(1500, help="Fold documents longer than this many characters."),
    version: Optional[bool] = version_option(),
) -> None:
    """Highlight the mentions of PREDICTIONS in a self-contained HTML page (no network resources)."""
    from ..quality.show import choose_documents, render_page

    try:
        if rows is not None and sample is not None:
            raise InputError("--rows N shows the first N documents and --sample N draws N at random: pass one of them")
        for name, value in (("--rows", rows), ("--sample", sample)):
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, found {value}")
        path = Path(predictions)
        target = output or default_show_output(path)
        data, text_column = _read_shown(path, text_column, id_column)
        counts = [len(m or []) for m in data["mentions"]]
        chosen, note = choose_documents(counts, 50 if rows is None else rows, sample, seed, min_mentions,
                                        max_mentions, str(path))
        if sample is not None and sample > len(chosen):
            typer.echo(f"note: --sample {sample}: {note}", err=True)
        names = data[id_column] if id_column else list(range(len(counts)))
        texts = data["texts"]
        page = render_page(f"tommer mentions: {path.name}",
                           [(names[i], texts[i], data["mentions"][i] or []) for i in chosen],
                           note=f"{note}; text column {text_column!r}; hover a highlight for its mentions and scores",
                           fold_chars=fold_chars)
        try:
            target.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--output {target}: cannot write it ({exc})") from exc
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"wrote {target} ({len(chosen)} documents, {note}; text column {text_column!r})")


def default_show_output(path: Path) -> Path:
    """``tommer-show``'s page beside its input: ``out/a.parquet`` -> ``out/a.html``."""
    return path.with_name((path.name[: -len(".parquet")] if path.name.endswith(".parquet") else path.name) + ".html")


def _read_shown(path: Path, text_column: str | None, id_column: str | None) -> tuple[dict[str, list], str]:
    """The mentions, texts (``texts``) and ids of a tommer-annotate output, and the text column used.

    The text column is ``text_column``, else the one tommer-annotate recorded in the output, else
    'text'; a dotted name reaches into a struct column (``meta.body``). A missing one is an error
    saying whether the output dropped it (``--columns``) or which columns it has.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..fields import column_at, field_at, root_column, texts_of
    from ..io.metadata import read_tommer

    try:
        schema = pq.read_schema(path)
        recorded = read_tommer(path).get("text_column")
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    if "mentions" not in schema.names:
        raise InputError(f"{path}: no 'mentions' column (is it a tommer-annotate output?); its columns: "
                         f"{', '.join(schema.names)}")
    if id_column and id_column not in schema.names:
        raise InputError(f"{path}: no column {id_column!r} (--id-column); its columns: {', '.join(schema.names)}")
    column = text_column or recorded or "text"
    if field_at(schema, column) is None:
        listed = ", ".join(schema.names)
        if recorded and column == recorded:
            hint = (f"tommer-annotate read the text from {recorded!r} but did not keep it in the output (--columns): "
                    f"re-annotate keeping {recorded.split('.')[0]!r} in --columns, "
                    "or pass --text-column")
        else:
            hint = ("pass --text-column with the column holding the text (a dotted name such as meta.body reaches a "
                    "field inside a struct column)" + (f"; tommer-annotate read {recorded!r}" if recorded else ""))
        raise InputError(f"{path}: no column {column!r} (--text-column); its columns: {listed}: {hint}")
    table = pq.read_table(path, columns=list(dict.fromkeys(
        c for c in ("mentions", root_column(schema, column), id_column) if c)))
    data = {"mentions": table.column("mentions").to_pylist(), "texts": texts_of(column_at(table, column), str(path), column)}
    if id_column:
        data[id_column] = table.column(id_column).to_pylist()
    return data, column


def eval_main() -> None:
    eval_app(prog_name="tommer-eval")


def show_main() -> None:
    show_app(prog_name="tommer-show")


def module_main(argv: list[str] | None = None) -> None:
    """``python -m tommer.runtime.cli.quality [eval|show] ARGS``: ``show`` runs tommer-show, else tommer-eval."""
    args = sys.argv[1:] if argv is None else list(argv)
    prog = "python -m tommer.runtime.cli.quality"
    if args[:1] == ["show"]:
        show_app(args=args[1:], prog_name=f"{prog} show")
    else:
        eval_app(args=args[1:] if args[:1] == ["eval"] else args, prog_name=f"{prog} eval")


if __name__ == "__main__":
    module_main()
