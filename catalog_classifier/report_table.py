"""Render reports/evaluation.json as the Markdown tables the README quotes (Evaluation, Ablation)."""
from __future__ import annotations

import json
from pathlib import Path

ORDER = {"stack": 0, "linear_text": 1, "text": 2, "image": 3, "tfidf_lr": 4}
ABLATION_PREFIX = "stack_without_"  # the ablation records' model names (evaluation_ablation)
GUARANTEED = "stack_guaranteed"  # the guarantee mode's records (evaluation_hier): hierarchical fields only


def _f(v, digits=3):
    return "" if v is None else f"{v:.{digits}f}"


def markdown_table(records: list[dict]) -> str:
    head = ("| catalog | level | model | accuracy | macro-F1 | coverage @0.95 (precision) "
            "| coverage @0.98 (precision) | model only @0.98 | items / categories | CV |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    key = lambda r: (r["catalog"], r["level"], ORDER.get(r["model"], 9), r["model"])
    flat = (r for r in records if not r["model"].startswith(ABLATION_PREFIX) and r["model"] != GUARANTEED)
    for r in sorted(flat, key=key):
        cov = lambda t: (f"{_f(r.get(f'coverage_at_{t}'))} ({_f(r.get(f'precision_at_{t}'))})"
                         if r.get(f"coverage_at_{t}") is not None else "")
        mo = (f"{_f(r['model_only_coverage_at_098'])} ({_f(r.get('model_only_precision_at_098'))})"
              if r.get("model_only_coverage_at_098") is not None else "")
        name = f"**{r['model']}**" if r["model"] == "stack" else r["model"]
        rows.append(f"| {r['catalog']} | {r['level']} | {name} | {_f(r['accuracy'])} | {_f(r['macro_f1'])} "
                    f"| {cov('095')} | {cov('098')} | {mo} | {r['n_items']} / {r['n_categories']} "
                    f"| {r.get('cv', '')} |")
    return "\n".join([head, *rows])


def ablation_table(records: list[dict]) -> str:
    """One row per catalog/level: the stack's macro-F1, then each ``stack_without_<base>``'s
    macro-F1 and its change against the stack (negative: the base model helps)."""
    bases = sorted({r["model"][len(ABLATION_PREFIX):] for r in records if r["model"].startswith(ABLATION_PREFIX)})
    head = ("| catalog | level | stack | " + " | ".join(f"without {b}" for b in bases) + " | CV |\n"
            "|---|---|---|" + "---|" * len(bases) + "---|")
    by = {(r["catalog"], r["level"], r["model"]): r for r in records}
    rows = []
    for cat, level in sorted({(r["catalog"], r["level"]) for r in records if r["model"].startswith(ABLATION_PREFIX)}):
        stack = by.get((cat, level, "stack"))
        cells = []
        for b in bases:
            r = by.get((cat, level, ABLATION_PREFIX + b))
            cells.append("" if r is None else f"{_f(r['macro_f1'])} ({r['delta_macro_f1']:+.3f})")
        rows.append(f"| {cat} | {level} | {_f(None if stack is None else stack['macro_f1'])} | "
                    + " | ".join(cells) + f" | {'' if stack is None else stack.get('cv', '')} |")
    return "\n".join([head, *rows])


def hierarchy_table(records: list[dict]) -> str:
    """One row per catalog/level and routing (``stack`` point thresholds, ``stack_guaranteed``):
    coverage at full and any depth, hierarchical precision and mean accepted depth at 0.98 and
    0.95, and for the guarantee mode the share of folds whose measured precision met the target."""
    head = ("| catalog | level | routing | flat product @0.98 | full depth @0.98 | any depth @0.98 "
            "| hier. precision @0.98 | mean depth | any depth @0.95 (precision) | folds meeting 0.98 / 0.95 |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    hier = [r for r in records if r["model"] in ("stack", GUARANTEED) and "coverage_any_depth_at_098" in r]
    for r in sorted(hier, key=lambda r: (r["catalog"], str(r["level"]), r["model"])):
        folds = ""
        if r["model"] == GUARANTEED:
            pf = r.get("per_fold", [])
            met = lambda k: sum(bool(f.get(f"meets_target_at_{k}")) for f in pf if f.get(f"meets_target_at_{k}") is not None)
            n = lambda k: sum(f.get(f"meets_target_at_{k}") is not None for f in pf)
            folds = f"{met('098')}/{n('098')} · {met('095')}/{n('095')}"
        flat = _f(r.get("coverage_at_098"))  # the flat product (same model, same rules, no climb)
        rows.append(f"| {r['catalog']} | {r['level']} | {r['model']} | {flat if r['model'] == 'stack' else ''} "
                    f"| {_f(r.get('coverage_full_depth_at_098'))} | {_f(r.get('coverage_any_depth_at_098'))} "
                    f"| {_f(r.get('hierarchical_precision_at_098'))} | {_f(r.get('mean_accepted_depth'), 2)} "
                    f"| {_f(r.get('coverage_any_depth_at_095'))} ({_f(r.get('hierarchical_precision_at_095'))}) "
                    f"| {folds} |")
    return "\n".join([head, *rows])


def main(path: str = "reports/evaluation.json", table: str = "evaluation") -> None:  # pragma: no cover
    """``python -m catalog_classifier.report_table [path] [evaluation|ablation|hierarchy]``."""
    records = json.loads(Path(path).read_text())
    tables = {"ablation": ablation_table, "hierarchy": hierarchy_table}
    print(tables.get(table, markdown_table)(records))


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(*sys.argv[1:])
