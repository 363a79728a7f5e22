"""The data stage: read pinned sources, check every row, mix, hold out, sample, write.

    tunebook run data <exp>        # what the `data-<exp>` DVC stage runs

This module is the stage itself (`run`, `prepare`, `write_outputs`): it orchestrates the steps below,
which live in modules of their own, and writes `data/<exp>/`.

1. Read each source (local .jsonl/.json/.csv/.parquet files, DVC-tracked or not; local dataset folders;
   `hf:` datasets through runtime/hub.py) and record where it came from: sha256, the DVC md5 when DVC
   tracks it, the commit a hub revision resolved to. (runtime/sources.py)
2. Check every row against its format (prompt_completion, messages, preference, verifiable), count the
   JSON kinds of each field (the type census), convert or reject by policy. A rejected row goes to
   `quarantine.jsonl` with its reason; nothing is dropped silently. (runtime/checks.py, runtime/kinds.py)
3. Mix the sources by weight, hold out validation rows if asked, sample and cap: seeded, and stratified
   by source (and by `stratify:`) so the mixture and the strata survive every step. (runtime/shaping.py)
4. Compare the training prompts with every evaluation set (validation and eval.target tasks).
   (runtime/shaping.py)
5. Write `data/<exp>/` atomically, with `manifest.json`: planned vs actual counts, ratios and weights.
   Seed 000's bug (sample_ratio 0.25 that silently ran on 100 %) shows up there as planned != actual.

The heavy path is columnar: pyarrow parses, polars checks. Python touches only the rows that need it:
stringified-JSON candidates, values to convert, and files whose columns mix JSON kinds. pyarrow refuses
such a file instead of coercing it (polars' own reader would turn an object into its JSON text, which
looks exactly like seed 002's stringified JSON), and those files are then read row by row.
docs/data.md describes the spec keys, the policies and every manifest field.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tunebook.compiler.errors import SpecError
from tunebook.compiler.schema import FORMAT_FIELDS
from tunebook.files import file_sha256
from tunebook.runtime.checks import KEY, STRATUM, check_source, fail_issue
from tunebook.runtime.context import StageContext
from tunebook.runtime.contracts import DataManifest, DataTimings
from tunebook.runtime.folders import replacing
from tunebook.runtime.shaping import Contamination, eval_prompts, mix, prompts_of, same_source, take
from tunebook.runtime.sources import Where

# internal columns, never written: a checked row's source, and its position among all checked rows
# (what the final gather uses)
SOURCE, POS = "__source", "__pos"


@dataclass
class Prepared:
    train: pl.DataFrame  # canonical columns only, in their final order
    validation: pl.DataFrame
    quarantine: list[dict]
    manifest: dict


def prepare(ctx: StageContext) -> Prepared:
    """Everything the stage writes, computed in memory; nothing touches data/<exp>/ here."""
    d, root = ctx.spec.data, ctx.root
    spec_file = str(ctx.params.get("spec") or "params.yaml")
    data_at = Where(spec_file, f"{ctx.name}.data")
    seed = d.seed % 2**32
    label = f"data {ctx.name}"

    # 1-2. read and check every source
    checked, entries, fails = [], [], []
    for i, src in enumerate(d.train):
        where = data_at.at("train").at(i)
        c, entry = check_source(root, src, where, d, (seed, i), "train", label,
                                stratify_at=data_at.at("stratify") if d.stratify else None)
        entry["planned_weight"] = src.weight if src.weight is not None else 1.0
        checked.append(c)
        entries.append(entry)
        if c.quarantine and d.on_invalid == "fail":
            fails.append(fail_issue(where, c, entry["rows_read"]))
    formats = [e["format"] for e in entries]
    if len(set(formats)) > 1:
        listed = ", ".join(f"{s.source}: {f}" for s, f in zip(d.train, formats))
        raise data_at.error("train", f"a mixture needs one format; the sources are {listed}", hint="map columns with fields: and set format:")
    fmt = formats[0]
    val_checked = val_entry = None
    if d.validation:
        val_checked, val_entry = check_source(root, d.validation, data_at.at("validation"), d, (seed, len(d.train)),
                                              "validation", label, fmt=fmt)
        if val_checked.quarantine and d.on_invalid == "fail":
            fails.append(fail_issue(data_at.at("validation"), val_checked, val_entry["rows_read"]))
    if fails:
        raise SpecError(fails)
    empty = [data_at.at("train").at(i).issue("", f"no valid rows left in {s.source}: all {e['rows_read']} rejected"
                                                 + (f", most for: {next(iter(e['rejections']))}" if e.get("rejections") else ""),
                                             hint="standardize: true converts stringified JSON and numbers; fields: maps columns")
             for i, (s, e) in enumerate(zip(d.train, entries)) if e["rows_valid"] == 0]
    if empty:
        raise SpecError(empty)

    # 3. mix, hold out, sample, cap. These steps decide on a skeleton (source, position, key, stratum)
    # and always stratify by source, so the weights survive each step; the rows are gathered once.
    strata = [STRATUM] if d.stratify else []
    rows = pl.concat([c.rows for c in checked], how="vertical")  # no copy: the parts stay where they are
    skeletons, offset = [], 0
    for i, c in enumerate(checked):
        skeletons.append(c.rows.select(KEY, *strata, **{POS: pl.int_range(c.rows.height, dtype=pl.Int64) + offset, SOURCE: pl.lit(i, dtype=pl.Int32)})
                         .filter(c.rows["_valid"]))
        offset += c.rows.height
    parts = mix(skeletons, [e["planned_weight"] for e in entries], bool(d.stratify))
    pool = pl.concat(parts, how="vertical")
    heldout = pool.clear()
    if d.validation_split:
        n_val = max(1, int(pool.height * d.validation_split + 0.5)) if pool.height > 1 else 0
        heldout, pool = take(pool, n_val, [SOURCE, *strata])
    planned_rows = max(1, int(pool.height * d.sample_ratio + 0.5)) if pool.height else 0
    limited = bool(d.limit and d.limit < planned_rows)  # the limit, not the ratio, sets the size
    if d.limit:
        planned_rows = min(planned_rows, d.limit)
    chosen, _ = take(pool, planned_rows, [SOURCE, *strata])
    if chosen.is_empty():
        raise data_at.error("train", "no training rows left after holding out validation and sampling",
                            hint="raise sample_ratio, lower validation_split, or add rows")
    fields = list(FORMAT_FIELDS[fmt])
    train = rows.gather(chosen.sort(KEY, SOURCE)[POS]).select(fields)  # seeded order, sources evenly interleaved
    if d.validation_split:
        validation = rows.gather(heldout.sort(KEY, SOURCE)[POS]).select(fields)
    elif val_checked:
        validation = val_checked.rows.filter(pl.col("_valid")).select(fields)
    else:
        validation = train.clear()

    # 4. contamination: training prompts against every evaluation set, and the validation set against
    # each test set (the quickstart's validation file was its test file, and nothing said so)
    contamination = {}
    targets = ctx.spec.eval.target
    if validation.height or targets:
        index = Contamination(prompts_of(train, fmt))
        held = Contamination(prompts_of(validation, fmt)) if validation.height else None
        if validation.height:
            contamination["validation"] = index.check(prompts_of(validation, fmt), d.validation.source if d.validation else "validation_split")
        for i, task in enumerate(targets):
            prompts = eval_prompts(root, Where(spec_file, f"{ctx.name}.eval.target.{i}"), task)
            contamination[f"target:{task.name}"] = index.check(prompts, task.source)
            if held is not None:
                contamination[f"validation vs target:{task.name}"] = {
                    **held.check(prompts, task.source), "same_file": bool(d.validation) and same_source(root, d.validation, task)}

    # 5. the manifest: counts, ratios and weights planned and actual, so a report can flag a difference
    used = dict(chosen.group_by(SOURCE).len().iter_rows())
    held = dict(heldout.group_by(SOURCE).len().iter_rows())
    for i, entry in enumerate(entries):
        entry.update(rows_mixed=parts[i].height, rows_heldout=held.get(i, 0), rows_used=used.get(i, 0),
                     actual_weight=round(used.get(i, 0) / chosen.height, 6))
    quarantine = [q for c in checked for q in c.quarantine] + (val_checked.quarantine if val_checked else [])
    census: dict[str, dict[str, int]] = {}  # by canonical field, summed over the train sources
    for c, src in zip(checked, d.train):
        canonical = {col: canon for canon, col in src.fields.items()}
        for col, kinds in c.census.items():
            bucket = census.setdefault(canonical.get(col, col), {})
            for kind, n in kinds.items():
                bucket[kind] = bucket.get(kind, 0) + n
    manifest = {
        "format": fmt,
        "policy": {"on_invalid": d.on_invalid, "standardize": d.standardize},
        "seed": d.seed,
        "sources": entries,
        "validation": val_entry or ({"validation_split": d.validation_split} if d.validation_split else None),
        "mixed_rows": pool.height + heldout.height,
        "heldout_rows": heldout.height,
        # with a limit that caps the sample, the plan is limit / pool, not sample_ratio: comparing the
        # achieved ratio with sample_ratio would call a followed plan "not followed"
        "planned_sample_ratio": round(planned_rows / pool.height, 6) if limited else d.sample_ratio,
        "actual_sample_ratio": round(chosen.height / pool.height, 6),
        "limit": d.limit,
        "limited": limited,
        "planned_train_rows": planned_rows,
        "train_rows": train.height,
        "validation_rows": validation.height,
        "rejected_rows": len(quarantine),
        "converted_rows": sum(c.converted for c in checked) + (val_checked.converted if val_checked else 0),
        "type_census": census,
        "contamination": contamination,
    }
    if d.stratify:
        manifest["stratify"] = {"column": d.stratify, "mixed": _strata(pl.concat(parts)), "train": _strata(chosen)}
    return Prepared(train=train, validation=validation, quarantine=quarantine, manifest=manifest)


def _strata(rows: pl.DataFrame, most: int = 100) -> dict[str, int]:
    """Rows per stratum value, the commonest first (at most `most` values, so a manifest stays small)."""
    counts = rows.group_by(STRATUM).len().sort(["len", STRATUM], descending=[True, False]).head(most)
    return dict(counts.iter_rows())


def write_outputs(out_dir: Path, prepared: Prepared) -> None:
    """Write everything into a temporary sibling folder, then swap it in: an interrupted or failed write
    leaves the previous data/<exp>/ as it was."""
    with replacing(out_dir) as tmp:
        prepared.train.write_ndjson(tmp / "train.jsonl")
        prepared.validation.write_ndjson(tmp / "validation.jsonl")
        with (tmp / "quarantine.jsonl").open("w") as f:
            for q in prepared.quarantine:
                f.write(json.dumps(q, ensure_ascii=False, default=str) + "\n")
        manifest = prepared.manifest
        manifest["files"] = {name: file_sha256(tmp / name) for name in ("train.jsonl", "validation.jsonl", "quarantine.jsonl")}
        manifest["sha256"] = manifest["files"]["train.jsonl"]  # what training fingerprints
        DataManifest.write(tmp / "manifest.json", manifest)


def _warnings(m: dict) -> list[str]:
    """What deserves a look before training, from the manifest."""
    out = []
    for s in m["sources"] + ([m["validation"]] if m["validation"] and "source" in m["validation"] else []):
        if s.get("pin") == "not pinned in spec":
            out.append(f"{s['source']} is not pinned in the spec: revision '{s.get('revision') or 'main'}' resolved to {s.get('resolved_revision')}")
        if s.get("dvc", {}).get("matches") is False:
            out.append(f"{s['source']} differs from its DVC record ({s['dvc']['file']}): `dvc add` or `dvc checkout` it")
        if s.get("rejected"):
            top = next(iter(s["rejections"]))
            out.append(f"{s['source']}: {s['rejected']} of {s['rows_read']} rows quarantined (most: {top})")
    for name, c in m["contamination"].items():
        if c["normalized"]:
            out.append(f"{c['normalized']} of {c['n']} {name} prompts also appear in the training data ({c['exact']} exactly)")
    return out


def run(ctx: StageContext) -> None:
    t0 = time.time()
    prepared = prepare(ctx)
    m = prepared.manifest
    write_outputs(ctx.data_dir, prepared)
    # The duration stays out of data/<exp>/: DVC hashes that folder, and a timing inside it would make
    # every identical rerun look like new data and retrain everything downstream.
    seconds = round(time.time() - t0, 2)
    DataTimings.write(ctx.run_dir / "timings" / "data.json", {"data": seconds})
    for w in _warnings(m):
        print(f"[data {ctx.name}] warning: {w}", flush=True)
    print(f"[data {ctx.name}] {m['train_rows']} train / {m['validation_rows']} validation rows, {m['rejected_rows']} quarantined, "
          f"sample ratio {m['actual_sample_ratio']} (planned {m['planned_sample_ratio']}) in {seconds}s -> data/{ctx.name}/", flush=True)
