"""The SQL cookbook's answers: runs every query of docs/analytics.md on a zoo, prints each answer, renders the charts.

docs/analytics.md is the one source of the questions and their SQL: each ```sql block is followed by an answer
between `<!-- answer -->` and `<!-- /answer -->`, which `--write` replaces with what the query returns now. A block
opened as ```sql chart=NAME also feeds the chart NAME (CHARTS below), drawn to docs/img/NAME.png. Queries run in a
read-only transaction, so pointing this at a zoo others use changes nothing in it.

    python bench/analytics_report.py /tmp/eng/dump/data          # an embedded server's data folder, or
    python bench/analytics_report.py "$(zoo db url)" --write     # a URL; --write updates the document and charts
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "analytics.md"
SHOWN_ROWS = 25
CELL_CHARS = 60
_BLOCK = re.compile(r"```sql(?P<options>[^\n]*)\n(?P<sql>.*?)```\s*<!-- answer -->.*?<!-- /answer -->", re.S)


@dataclass(frozen=True)
class Question:
    sql: str
    chart: str | None
    span: tuple[int, int]  # where its SQL block and answer are in the document


def questions(document: str) -> list[Question]:
    """Every SQL block of the document that has an answer region after it, in order."""
    found = []
    for match in _BLOCK.finditer(document):
        options = dict(option.split("=", 1) for option in match["options"].split() if "=" in option)
        found.append(Question(match["sql"].strip(), options.get("chart"), match.span()))
    return found


def run(conn: Connection, sql: str) -> tuple[list[str], list[tuple]]:
    result = conn.execute(text(sql))
    return list(result.keys()), [tuple(row) for row in result]


def cell(value: object) -> str:
    """A value as a table cell: numbers plainly, lists shortened, text cut and its pipes escaped."""
    if value is None:
        return ""
    if isinstance(value, float | Decimal):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        shown = ", ".join(str(item) for item in value[:3])
        value = f"{shown}, … ({len(value)})" if len(value) > 3 else shown
    value = " ".join(str(value).split())
    value = value if len(value) <= CELL_CHARS else value[:CELL_CHARS - 1] + "…"
    return value.replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[tuple]) -> str:
    if not rows:
        return "_(no rows)_"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows[:SHOWN_ROWS]]
    if len(rows) > SHOWN_ROWS:
        lines.append(f"\n_{len(rows):,} rows; the first {SHOWN_ROWS} shown._")
    return "\n".join(lines)


def _models_per_base_model_per_month(axes, columns: list[str], rows: list[tuple]) -> None:
    series: dict[str, dict] = {}
    for row in rows:
        record = dict(zip(columns, row))
        series.setdefault(record["base_model"] or "(none)", {})[record["month"]] = record["new_models"]
    for name, points in series.items():
        months = sorted(points)
        axes.plot(months, [points[month] for month in months], marker="o", label=name)
    axes.set(title="New models per base model per month", ylabel="models first seen on the base model")
    axes.legend()
    axes.figure.autofmt_xdate()


def _nsfw_share_by_type(axes, columns: list[str], rows: list[tuple]) -> None:
    records = [dict(zip(columns, row)) for row in rows]
    names = [record["type"] for record in records]
    left = [0.0] * len(records)
    for rule, colour, label in (("by_flag", "#b5443b", "NSFW: the API's flag"),
                                ("by_level", "#7a2e8a", "NSFW: nsfwLevel bits"),
                                ("by_images", "#e0913a", "NSFW: most example images Mature/X")):
        shares = [record[rule] / record["models"] if record["models"] else 0.0 for record in records]
        if any(shares):
            axes.barh(names, shares, left=left, color=colour, label=label)
            left = [a + b for a, b in zip(left, shares)]
    axes.barh(names, [1 - share for share in left], left=left, color="#9bb7d4", label="SFW")
    for y, record in enumerate(records):
        axes.text(1.01, y, f"{record['nsfw_models']:,} of {record['models']:,}", va="center", fontsize=8)
    axes.set(title="NSFW share of the models of each type, by the rule that decided it", xlim=(0, 1.25),
             xlabel="share of the type's models")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8, frameon=False)
    axes.invert_yaxis()


def _co_usage_hubs(axes, columns: list[str], rows: list[tuple]) -> None:
    records = [dict(zip(columns, row)) for row in rows]
    axes.barh([_drawable(f"{record['checkpoint'][:40]} ({record['version'][:20]})") for record in records],
              [record["adapters"] for record in records], color="#5b8a5b")
    axes.set(title="Co-usage hubs: checkpoints by adapters used with them", xlabel="adapter versions")
    axes.invert_yaxis()


def _drawable(label: str) -> str:
    """The label without CJK characters and brackets, which the charts' font (DejaVu Sans) has no glyphs for."""
    return " ".join("".join(ch for ch in label if ord(ch) < 0x2E80).replace(" | ", " ").split())


CHARTS: dict[str, Callable] = {
    "models_per_base_model_per_month": _models_per_base_model_per_month,
    "nsfw_share_by_type": _nsfw_share_by_type,
    "co_usage_hubs": _co_usage_hubs,
}


def draw(name: str, columns: list[str], rows: list[tuple], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 5), dpi=100)
    CHARTS[name](axes, columns, rows)
    figure.tight_layout()
    path = folder / f"{name}.png"
    figure.savefig(path, metadata={"Software": None})  # no version stamp: the same data draws the same bytes
    pyplot.close(figure)
    return path


def zoo_url(target: str) -> str | None:
    """A URL (plain postgresql:// ones get the psycopg 3 driver), or a folder: an embedded server's data directory
    (started or joined); None if `target` is neither."""
    sys.path.insert(0, str(REPO))
    from db.engine import url_or_embedded

    if "://" in target:
        return url_or_embedded(target, Path(target))
    return url_or_embedded(None, Path(target)) if Path(target).is_dir() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", help="the zoo's database URL, or an embedded server's data folder")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--write", action="store_true", help="write the answers into the document and the charts")
    args = parser.parse_args()
    url = zoo_url(args.zoo)
    if url is None:
        print(f"skipped: {args.zoo} is neither a database URL nor a data folder")
        return
    document = args.doc.read_text(encoding="utf-8")
    asked = questions(document)
    images = args.doc.parent / "img"
    images.mkdir(exist_ok=True)
    timings, charts, pieces, last = [], [], [], 0
    with create_engine(url).connect() as conn:
        conn.execute(text("SET TRANSACTION READ ONLY"))
        for number, question in enumerate(asked, start=1):
            started = time.perf_counter()
            try:
                with conn.begin_nested():
                    columns, rows = run(conn, question.sql)
            except DBAPIError as error:  # one broken query is reported as its answer; the others still run
                columns, rows = [], []
                answer = f"_query failed: {' '.join(str(error.orig).split())[:300]}_"
            else:
                answer = markdown_table(columns, rows)
            timings.append(time.perf_counter() - started)
            print(f"-- {number}. ({len(rows)} rows, {timings[-1] * 1000:.0f} ms)\n{question.sql}\n\n{answer}\n")
            if question.chart and args.write and rows:
                charts.append(draw(question.chart, columns, rows, images).name)
            start, end = question.span
            block = document[start:end]
            pieces += [document[last:start], block[:block.index("<!-- answer -->")],
                       f"<!-- answer -->\n{answer}\n<!-- /answer -->"]
            last = end
    if args.write:
        args.doc.write_text("".join(pieces) + document[last:], encoding="utf-8")
    print(json.dumps({"bench": "analytics_report", "questions": len(asked), "charts": charts,
                      "total_ms": round(sum(timings) * 1000), "slowest_ms": round(max(timings, default=0) * 1000)}))


if __name__ == "__main__":
    main()
