"""The data stage: read pinned sources, normalize to one format, validate, mix, sample, write.

    tunebook run data <exp>        # what the `data-<exp>` DVC stage runs

Writes `data/<exp>/` atomically (a temporary folder renamed into place): `train.jsonl`,
`validation.jsonl` (when the spec has one), `quarantine.jsonl` (every rejected row with its reason)
and `manifest.json` (sources with hashes and revisions, planned vs actual counts and ratios). The
manifest is what makes seed 000's bug — sample_ratio 0.25 silently running on 100 % — impossible to
miss: the report compares planned and actual.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from compiler.errors import SpecError, SpecIssue
from compiler.schema import Source
from runtime.stages import StageContext

# canonical fields of each format; the spec's `fields:` maps canonical name -> source column
FORMATS = {
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "verifiable": ("prompt", "answer"),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_local(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open() as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        return rows
    if suffix == ".json":
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else data.get("data", [])
    if suffix in (".csv", ".parquet"):
        import polars as pl

        df = pl.read_csv(path) if suffix == ".csv" else pl.read_parquet(path)
        return df.to_dicts()
    raise ValueError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .json, .csv or .parquet)")


def read_source(root: Path, src: Source, key: str) -> tuple[list[dict], dict]:
    """Rows of one source and its manifest entry (hash, revision)."""
    entry = {"source": src.source, "split": src.split, "revision": src.revision}
    if src.source.startswith("hf:"):
        from runtime.hub import load_hf_dataset

        rows, resolved = load_hf_dataset(src.source[3:], src.config, src.split, src.revision)
        entry["resolved_revision"] = resolved
        entry["sha256"] = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    else:
        path = (root / src.source).resolve()
        if not path.exists():
            raise SpecError([SpecIssue("params.yaml", key + ".source", f"'{src.source}' does not exist")])
        if path.is_dir():
            from runtime.hub import load_local_dataset

            rows = load_local_dataset(path, src.split)
            entry["sha256"] = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
        else:
            rows = read_local(path)
            entry["sha256"] = sha256_file(path)
    entry["rows_read"] = len(rows)
    if src.limit:
        rows = rows[: src.limit]
    return rows, entry


def detect_format(src: Source, columns: set[str]) -> str:
    if src.format != "auto":
        return src.format
    mapped = {canon: src.fields.get(canon, canon) for fmt in FORMATS.values() for canon in fmt}
    for fmt in ("preference", "messages", "prompt_completion", "verifiable"):
        if all(mapped[c] in columns for c in FORMATS[fmt]):
            return fmt
    raise ValueError(f"cannot tell the format from columns {sorted(columns)}; set `format:` and `fields:`")


def normalize(row: dict, fmt: str, fields: dict[str, str]) -> tuple[dict | None, str | None]:
    """Row in canonical form, or (None, reason). Stringified JSON and non-strings are reasons, not guesses."""
    out = {}
    for canon in FORMATS[fmt]:
        col = fields.get(canon, canon)
        if col not in row:
            return None, f"missing field '{col}'"
        val = row[col]
        if canon == "messages":
            if not (isinstance(val, list) and val and all(isinstance(m, dict) and "role" in m and "content" in m for m in val)):
                return None, "messages is not a list of {role, content}"
        elif val is None:
            return None, f"'{col}' is null"
        elif not isinstance(val, str):
            val = str(val) if isinstance(val, (int, float)) and not isinstance(val, bool) else None
            if val is None:
                return None, f"'{col}' is {type(row[col]).__name__}, expected text"
        elif not val.strip():
            return None, f"'{col}' is empty"
        out[canon] = val
    return out, None


def _rowkey(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def prepare(ctx: StageContext) -> dict:
    spec, root = ctx.spec, ctx.root
    d = spec.data
    rng = random.Random(d.seed)
    manifest: dict = {"sources": [], "rejected_rows": 0, "planned_sample_ratio": d.sample_ratio}
    quarantine: list[dict] = []
    per_source: list[list[dict]] = []
    fmt_seen = set()
    for i, src in enumerate(d.train):
        rows, entry = read_source(root, src, f"{ctx.name}.data.train.{i}")
        fmt = detect_format(src, set().union(*(r.keys() for r in rows[:100])) if rows else set())
        fmt_seen.add(fmt)
        kept = []
        for j, r in enumerate(rows):
            n, why = normalize(r, fmt, src.fields)
            if n is None:
                quarantine.append({"source": src.source, "row": j, "reason": why, "data": r})
            else:
                kept.append(n)
        entry.update(rows_valid=len(kept), rejected=len(rows) - len(kept), planned_weight=src.weight, format=fmt)
        manifest["sources"].append(entry)
        per_source.append(kept)
    if len(fmt_seen) > 1:
        raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.data.train", f"sources have different formats {sorted(fmt_seen)}; a mixture needs one")])

    # Mix by weight: the largest mixture the weights allow without repeating rows, then sample.
    weights = [s.weight or 1.0 for s in d.train]
    total = min(len(rows) / w for rows, w in zip(per_source, weights)) if len(per_source) > 1 else len(per_source[0])
    mixed: list[tuple[int, dict]] = []  # (source index, row): keeps per-source counts exact and cheap
    for k, (rows, w, entry) in enumerate(zip(per_source, weights, manifest["sources"])):
        take = len(rows) if len(per_source) == 1 else int(round(total * w))
        picked = rng.sample(rows, take) if take < len(rows) else list(rows)
        entry["rows_mixed"] = len(picked)
        mixed.extend((k, r) for r in picked)
    n_keep = max(1, int(round(len(mixed) * d.sample_ratio))) if mixed else 0
    if d.limit:
        n_keep = min(n_keep, d.limit)
    rng.shuffle(mixed)
    kept_pairs = mixed[:n_keep]
    train = [r for _, r in kept_pairs]
    if not train:
        raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.data.train", "no training rows left after validation and sampling; see the quarantine counts")])
    for k, entry in enumerate(manifest["sources"]):
        entry["rows_used"] = sum(1 for src_i, _ in kept_pairs if src_i == k)
        entry["actual_weight"] = round(entry["rows_used"] / len(train), 6)

    validation: list[dict] = []
    if d.validation:
        vrows, ventry = read_source(root, d.validation, f"{ctx.name}.data.validation")
        vfmt = detect_format(d.validation, set().union(*(r.keys() for r in vrows[:100])) if vrows else set())
        for j, r in enumerate(vrows):
            n, why = normalize(r, vfmt, d.validation.fields)
            if n is None:
                quarantine.append({"source": d.validation.source, "row": j, "reason": why, "data": r})
            else:
                validation.append(n)
        ventry.update(rows_valid=len(validation), format=vfmt, role="validation")
        manifest["validation"] = ventry

    manifest.update(
        train_rows=len(train), validation_rows=len(validation), rejected_rows=len(quarantine),
        actual_sample_ratio=round(len(train) / len(mixed), 6) if mixed else None,
        format=fmt_seen.pop() if fmt_seen else None,
        contamination=contamination(train, validation),
    )
    return {"train": train, "validation": validation, "quarantine": quarantine, "manifest": manifest}


def _norm_text(s: str) -> str:
    return " ".join(s.lower().split())


def contamination(train: list[dict], evalset: list[dict]) -> dict:
    """Exact and whitespace/case-normalized prompt overlap between training and evaluation rows."""
    def prompts(rows):
        return [r.get("prompt") or json.dumps(r.get("messages", ""), sort_keys=True) for r in rows]

    tr = set(prompts(train))
    trn = {_norm_text(p) for p in tr}
    ev = prompts(evalset)
    exact = [p for p in ev if p in tr]
    normed = [p for p in ev if _norm_text(p) in trn]
    return {"validation": {"n": len(ev), "exact": len(exact), "normalized": len(normed), "examples": normed[:3]}}


def write_outputs(out_dir: Path, result: dict) -> None:
    """Write everything to a temporary sibling folder, then swap it in: never half-written."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        for name in ("train", "validation", "quarantine"):
            with (tmp / f"{name}.jsonl").open("w") as f:
                for r in result[name]:
                    f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
        result["manifest"]["sha256"] = sha256_file(tmp / "train.jsonl")
        (tmp / "manifest.json").write_text(json.dumps(result["manifest"], indent=1, sort_keys=True, default=str) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run(ctx: StageContext) -> None:
    t0 = time.time()
    result = prepare(ctx)
    result["manifest"]["seconds"] = round(time.time() - t0, 2)
    write_outputs(ctx.data_dir, result)
    m = result["manifest"]
    print(f"[data {ctx.name}] {m['train_rows']} train / {m['validation_rows']} validation rows, "
          f"{m['rejected_rows']} quarantined, sample ratio {m['actual_sample_ratio']} "
          f"(planned {m['planned_sample_ratio']}) -> data/{ctx.name}/", flush=True)
