"""``RESULTS.md``: the benchmark's figures for people, rendered from results.json."""
from __future__ import annotations

from pathlib import Path

from catalog_classifier.io_utils import atomic_write_text
from .stages import STAGES
from .taxonomy import markdown as taxonomy_markdown


def _f(x, spec=".3f") -> str:
    return "–" if x is None else format(x, spec)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _yes(t: dict | None) -> str:
    return "–" if not t else ("met" if t["met"] else "**missed**")


def _machine(r: dict) -> list[str]:
    m, v = r.get("machine", {}), r.get("versions", {})
    gpu = m.get("gpu")
    libs = ", ".join(f"{k} {v[k]}" for k in ("torch", "torchvision", "timm", "lightgbm", "scikit-learn",
                                              "sentencepiece", "numpy", "pandas") if v.get(k))
    return [
        f"- **Date**: {r.get('date')} ({_run_label(r)})",
        f"- **CPU**: {m.get('cpu')}, {m.get('cores')} usable cores ({m.get('logical_cpus')} logical), "
        f"{m.get('memory_gb')} GB RAM, torch threads {m.get('torch_threads')}; {m.get('os')}",
        f"- **GPU**: {gpu['name'] + ', ' + str(gpu['memory_gb']) + ' GB' if gpu else 'none'}",
        f"- **Load average** (1/5/15 min) at start {m.get('load_average_at_start')}, at end "
        f"{m.get('load_average_at_end')}; figures compared with each other were measured in the same run, "
        f"side by side, so ratios hold on a busy machine even where absolute items/s do not.",
        f"- **Python** {v.get('python')}; {libs}",
    ]


def _targets(r: dict) -> list[str]:
    t, s = r.get("throughput", {}).get("targets", {}), r.get("scaling_summary", {})
    rows = ["| target | measured | |", "|---|---|---|"]
    if t:
        rows.append(f"| warm nightly ≥ 10× cold (demo catalog) | {t['warm_over_cold']['measured']:.1f}× | "
                    f"{_yes(t['warm_over_cold'])} |")
        rt = r["throughput"].get("runtime", "torch")
        rows.append(f"| cold end-to-end ≥ 0.6 × the {rt} forward limit | {t['cold_to_limit']['measured']:.2f}× | "
                    f"{_yes(t['cold_to_limit'])} |")
        if "cold_over_torch_cold" in t:
            rows.append(f"| cold nightly on {rt} ≥ 5× torch-eager cold nightly | "
                        f"{t['cold_over_torch_cold']['measured']:.1f}× | {_yes(t['cold_over_torch_cold'])} |")
    if s:
        rows.append(f"| peak RSS at {r['scaling'][-1]['replicas']}× within 30% of 1× | "
                    f"{s['memory_ratio_largest_to_1x']:.2f}× | {_yes(s['memory_target'])} |")
    secs = r.get("section_seconds", {}).get("total")
    if secs is not None and r.get("mode") == "full":
        how = " (sum of each section's latest run)" if r["section_seconds"].get("total_from_sections") else ""
        rows.append(f"| `make bench` under 20 minutes | {secs / 60:.1f} min{how} | "
                    f"{'met' if secs < 1200 else '**missed**'} |")
    return rows


def _quality(r: dict) -> list[str]:
    out = ["How: each (catalog, level) is fitted once with a K-fold out-of-fold layer; every figure below comes "
           "from out-of-fold predictions (stack = calibrated LightGBM meta; image / text / linear_text = each "
           "base model alone; tfidf_lr and frozen_cnn_lr = peers on the same folds; frozen_cnn_lr *is* the image "
           "base model). Coverage at a target precision is the share of items auto-accepted with per-category "
           "thresholds chosen on the *other* folds' out-of-fold scores (cross-fitted), precision is measured on "
           "the accepted items. `reports/evaluation.json` (`make evaluate`) holds the stricter nested-CV figures "
           "(every outer fold retrains the whole product, inner out-of-fold layer included).", ""]
    groups: dict = {}
    for rec in r.get("quality", []):
        groups.setdefault((rec["catalog"], rec["level"]), []).append(rec)
    order = ["stack", "tfidf_lr", "frozen_cnn_lr", "text", "linear_text", "image"]
    for (cat, level), recs in groups.items():
        recs.sort(key=lambda x: order.index(x["model"]) if x["model"] in order else 99)
        n = recs[0]
        out += [f"**{cat}, level {level}** ({n['n_items']} items, {n['n_categories']} categories)", "",
                "| model | accuracy | macro-F1 | coverage @0.95 (precision) | coverage @0.98 (precision) |",
                "|---|---|---|---|---|"]
        for x in recs:
            out.append(f"| {x['model']} | {_f(x['accuracy'])} | {_f(x['macro_f1'])} | "
                       f"{_pct(x.get('coverage_at_095'))} ({_f(x.get('precision_at_095'))}) | "
                       f"{_pct(x.get('coverage_at_098'))} ({_f(x.get('precision_at_098'))}) |")
        out.append("")
    return out


def _throughput(t: dict, title: str) -> list[str]:
    rt = t.get("runtime", "torch")
    out = [f"{title}: demo catalog ({t['items']} items), device `{t['device']}`, CNN batch {t['batch']}, "
           f"nightly chunks of {t['chunk_size']}, {t['threads']} torch threads; median of {t['repeats']} "
           f"repeats, each repeat = cold run, forward limits, warm run"
           + (", torch-eager cold and warm runs" if t.get("torch_items") else "") + " back to back. "
           f"Chosen runtime: **{rt}** (image backbone and char-CNN).", "",
           "| | items/s |", "|---|---|",
           f"| cold (empty embedding cache), {rt} | {t['cold_items_per_s']:.1f} |",
           f"| warm (cache full), {rt} | {t['warm_items_per_s']:.1f} |",
           f"| {rt} forward limit (pre-decoded batches, {t['limit_images']} images) | "
           f"{t.get('runtime_forward_items_per_s', t['cnn_forward_limit_items_per_s']):.1f} |"]
    if t.get("torch_items"):
        n = t["torch_items"]
        where = "same rows" if n == t["items"] else f"first {n} demo rows"
        out += [f"| torch eager forward (same batches) | {t['torch_forward_items_per_s']:.1f} |",
                f"| cold, torch eager ({where}) | {t['torch_cold_items_per_s']:.1f} |",
                f"| warm, torch eager ({where}) | {t['torch_warm_items_per_s']:.1f} |"]
    out += ["", f"cold / {rt} forward limit = **{t['cold_to_limit']:.2f}**, warm / cold = "
            f"**{t['warm_over_cold']:.1f}×** (medians of per-repeat ratios)."]
    if t.get("torch_items"):
        out[-1] += (f" {rt} / torch eager: forward **{t['runtime_over_torch_forward']:.1f}×**, cold night "
                    f"**{t['cold_over_torch_cold']:.1f}×**, warm night **{t['warm_over_torch_warm']:.1f}×**; "
                    f"torch-eager cold / torch forward = {t['torch_cold_to_torch_limit']:.2f}. The torch nights "
                    "use the same (exact) TF-IDF transform as the runtime's; only the CNNs' runtime differs.")
    roof = t.get("roofline")
    if roof:
        out += ["", f"FLOP roofline: {roof['gflop_per_image']:.3f} GFLOP per 224×224 image (torch "
                f"`FlopCounterMode`, 2 FLOPs per multiply-add) × {t['runtime_forward_items_per_s']:.1f} img/s = "
                f"{roof['runtime_forward_gflops']:.1f} GFLOP/s on {rt} (torch eager "
                f"{roof['torch_forward_gflops']:.1f}) against a measured fp32 GEMM peak of "
                f"{roof['peak_gflops']:.1f} GFLOP/s ({roof['n']}³ matmul, best of 3: torch "
                f"{roof['torch_gflops']:.1f}" + (f", OpenVINO {roof['openvino_gflops']:.1f}"
                                                  if "openvino_gflops" in roof else "")
                + f") in the same run: **roofline fraction {t['roofline_fraction']:.2f}** (depthwise convolutions "
                "are memory-bound, so 1.0 is out of reach)."]
    out.append("")
    if t.get("gpu_decode_pipeline"):
        g = t["gpu_decode_pipeline"]
        out += [f"GPU decode pipeline ({g['decode']}, {g['precision']}): {g['items_per_s']} items/s, "
                f"decode alone {g['decode_only_items_per_s']} items/s on {g['images']} JPEGs.", ""]
    cold, warm = t["stage_seconds"], t["warm_stage_seconds"]
    tc, tw = sum(cold.values()) or 1, sum(warm.values()) or 1
    out += ["Where the time goes (exclusive wall seconds, median run):", "",
            "| stage | cold s | cold share | warm s | warm share |", "|---|---|---|---|---|"]
    for k in STAGES:
        out.append(f"| {k} | {cold.get(k, 0):.2f} | {100 * cold.get(k, 0) / tc:.0f}% | {warm.get(k, 0):.2f} | "
                   f"{100 * warm.get(k, 0) / tw:.0f}% |")
    d = t["stage_detail"]
    out += ["", "Stages (exclusive times of the product's `catalog_classifier.events` stages): decode = read + "
            "sha256 + PIL decode + letterbox (inside the embedder, thread pool); "
            "cnn = backbone forward; text = char-CNN + linear text model; features = text normalisation, "
            "tabular + sentencepiece features, image head, thresholds + rules; lightgbm = meta "
            "matrix + booster + opinion pool + temperature; write = parts, merge, report, review queue + its three export formats; other = catalog "
            "read/validation, backbone loading, embedding-cache I/O, drift tests, run bookkeeping. Cold detail: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in d.items()) + ".", ""]
    return out


def _scaling(r: dict) -> list[str]:
    rows = r.get("scaling")
    if not rows:
        return []
    s = r["scaling_summary"]
    warm = rows[0].get("cache") == "warm"
    out = ["Demo catalog replicated with distinct item_ids; the image files are shared between replicas, so even "
           "from an empty cache only the first replica's images would go through the CNN and every later replica "
           "would hit the cache. " + ("Each size here starts from a copy of the cache the throughput section "
           "filled, so every size runs the warm path and time should grow linearly. " if warm else "Each size "
           "starts from an empty cache. ") + "One process per size; wall = the nightly run (model loading "
           "excluded), peak RSS = the whole process (model included).", "",
           "| replicas | items | wall s | items/s | peak RSS MB |", "|---|---|---|---|---|"]
    for x in rows:
        out.append(f"| {x['replicas']}× | {x['items']} | {x['wall_s']:.1f} | {x['items_per_s']:.1f} | "
                   f"{x['peak_rss_mb']:.0f} |")
    out += ["", "Marginal seconds per extra replica (constant = linear): " + ", ".join(
        f"{m['from']}×→{m['to']}× {m['seconds_per_extra_replica']:.2f} s" for m in s["marginal"])
        + f". Peak RSS {rows[-1]['replicas']}× / 1× = {s['memory_ratio_largest_to_1x']:.2f}.", ""]
    return out


def _engines(r: dict) -> list[str]:
    e = r.get("engines")
    if not e:
        return []
    if "skipped" in e:
        return [f"Not measured: {e['skipped']}.", ""]
    out = [f"`nightly --engine local` vs `--engine ray` on this machine: a local Ray {e['ray_version']} instance "
           f"with {e['ray_cpus']} CPUs, {e['actors']['image']} CNN actor(s) and {e['actors']['score']} scoring "
           f"actor(s) of 1 CPU each. Ray on one machine can only add overhead (actors load the model, batches go "
           f"through the object store); the figure is recorded, not judged. Ray's own start "
           f"({e['ray_start_s']:.1f} s) is outside the walls below; actor start-up and model loading are inside.",
           "", "| run | items | local items/s | ray items/s | ray / local | same rows |", "|---|---|---|---|---|---|"]
    for mode, what in (("warm", "warm cache, whole demo catalog"), ("cold", "empty cache, demo slice")):
        out.append(f"| {what} | {e[f'{mode}_local']['items']} | {e[f'{mode}_local']['items_per_s']} | "
                   f"{e[f'{mode}_ray']['items_per_s']} | {e[f'{mode}_ray_over_local']:.2f} | "
                   f"{'yes' if e[f'{mode}_outputs_equal'] else '**no**'} |")
    return out + [""]


def _training(r: dict) -> list[str]:
    rows = r.get("training")
    if not rows:
        return []
    out = ["`CatalogClassifier.fit` + `save` (what `train` does, without MLflow logging), one process per "
           "catalog and level; peak RSS measured at the end of the fit. The first Flipkart fit computes the "
           "image embeddings into an empty cache on the chosen image runtime (phase *embed*: read, decode, "
           "forward pass, cache writes); later fits reuse them (column *embedded*).", "",
           "| catalog | level | items | wall s | CPU s | peak RSS MB | embedded | phases (s) |",
           "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        ph = ", ".join(f"{k} {v:.0f}" for k, v in x.get("phases_s", {}).items())
        out.append(f"| {x['catalog']} | {x['level']} | {x['items']} | {x['wall_s']:.0f} | {x.get('cpu_s', 0):.0f} | "
                   f"{x['peak_rss_mb']:.0f} | {x.get('embeddings_computed', 0)} | {ph} |")
    caps = r.get("settings", {}).get("catalogs", [])
    caps = [f"{c['name']}: {c['overrides']}" for c in caps if c.get("overrides")]
    if caps:
        out += ["", "Budgeted settings (over the catalog's config): " + "; ".join(caps)
                + f"; BigBasket level 2 also {r['settings'].get('bigbasket_level2_caps')}."]
    return out + [""]


def write_markdown(r: dict, path: Path) -> Path:
    lines = ["# catalog-classifier benchmark", "",
             "Written by `make bench` (`python -m bench`) together with `results.json` (same figures, "
             "machine-readable). Re-run it after a change and compare.", "", "## Machine", ""]
    lines += _machine(r) + ["", "## Targets", ""] + _targets(r) + [""]
    for note in r.get("notes", []):
        lines.append(f"> {note}")
    folds = {t.get("settings", {}).get("n_folds") for t in r.get("training", [])}
    lines += ["", f"## Quality ({'/'.join(str(f) for f in sorted(folds - {None})) or '5'}-fold CV, fixed seeds)", ""]
    lines += _quality(r)
    if r.get("throughput"):
        lines += ["## Throughput of the nightly path", ""] + _throughput(r["throughput"], "CPU")
    lines += ["## Scaling", ""] + _scaling(r) + ["## Local vs Ray engine", ""] + _engines(r)
    lines += ["## Training cost", ""] + _training(r)
    lines += ["## Large taxonomies: training cost per leaf count", ""] + taxonomy_markdown(r.get("taxonomy"))
    lines += ["## GPU", ""]
    if r.get("gpu"):
        lines += _throughput(r["gpu"], f"GPU ({(r['gpu'].get('machine') or {}).get('gpu', {}).get('name')})")
    else:
        lines += ["Not measured: no CUDA device on the machine this ran on. `bench/gpu.sh` runs the same "
                  "throughput section on CUDA (bf16 autocast, channels_last, and a batched GPU JPEG decode "
                  "pipeline via `torchvision.io.decode_jpeg(device='cuda')`) and adds a `gpu` block to "
                  "results.json.", ""]
    secs = r.get("section_seconds", {})
    lines += ["## Benchmark run time", "", ", ".join(f"{k} {v / 60:.1f} min" for k, v in secs.items() if not isinstance(v, bool)), ""]
    atomic_write_text("\n".join(lines) + "\n", path)
    return path


def _run_label(r: dict) -> str:
    """How the latest run was started: all sections, or which (the others are kept from before)."""
    from .runner import SECTIONS  # runner imports this module

    quick = " --quick" if r.get("mode") == "quick" else ""
    run = r.get("sections_run")
    if not run or set(run) == set(SECTIONS):
        return f"{r.get('mode')} run: `python -m bench{quick}`"
    flags = "".join(f" --section {x}" for x in run)
    return f"latest run: `python -m bench{quick}{flags}`; other sections from earlier runs"
