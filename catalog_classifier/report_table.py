"""Render reports/evaluation.json as the Markdown table the README quotes."""
from __future__ import annotations

import json
from pathlib import Path

ORDER = {"stack": 0, "linear_text": 1, "text": 2, "image": 3, "tfidf_lr": 4}


def _f(v, digits=3):
    return "" if v is None else f"{v:.{digits}f}"


def markdown_table(records: list[dict]) -> str:
    head = ("| catalog | level | model | accuracy | macro-F1 | coverage @0.95 (precision) "
            "| coverage @0.98 (precision) | model only @0.98 | items / categories | CV |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    key = lambda r: (r["catalog"], r["level"], ORDER.get(r["model"], 9), r["model"])
    for r in sorted(records, key=key):
        cov = lambda t: (f"{_f(r.get(f'coverage_at_{t}'))} ({_f(r.get(f'precision_at_{t}'))})"
                         if r.get(f"coverage_at_{t}") is not None else "")
        mo = (f"{_f(r['model_only_coverage_at_098'])} ({_f(r.get('model_only_precision_at_098'))})"
              if r.get("model_only_coverage_at_098") is not None else "")
        name = f"**{r['model']}**" if r["model"] == "stack" else r["model"]
        rows.append(f"| {r['catalog']} | {r['level']} | {name} | {_f(r['accuracy'])} | {_f(r['macro_f1'])} "
                    f"| {cov('095')} | {cov('098')} | {mo} | {r['n_items']} / {r['n_categories']} "
                    f"| {r.get('cv', '')} |")
    return "\n".join([head, *rows])


def main(path: str = "reports/evaluation.json") -> None:  # pragma: no cover - a thin printer
    print(markdown_table(json.loads(Path(path).read_text())))


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(*sys.argv[1:])
