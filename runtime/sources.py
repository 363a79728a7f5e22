"""Reading sources: everything the data stage (and the eval stage) reads rows from.

- local files: .jsonl/.ndjson (columnar through pyarrow, row by row when a column mixes JSON kinds or a
  line is not a JSON object), .json, .csv and .parquet, hashed while they are read (sha256, and the md5
  that a DVC record is compared with); `dvc_record` finds how DVC tracks a path;
- local dataset folders and `hf:` hub datasets, through runtime/hub.py;
- `load_source`: one spec source as a `Loaded` frame plus its manifest entry; `read_source` and
  `read_local`: the same rows as dicts, for stages that need a few rows;
- `Where`: where a spec value lives, so a source that cannot be read fails as a SpecError at its key.

ROW, the internal column every reader adds, is a record's index in its source.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

from tunebook.compiler.errors import SpecError, SpecIssue, did_you_mean
from tunebook.compiler.schema import Source
from tunebook.runtime.hub import HubError, is_commit, load_hub_dataset, load_local_dataset
from tunebook.runtime.kinds import KIND_WORDS, kind_of
from tunebook.runtime.progress import Progress

ROW = "__row"  # internal column, never written: a record's index in its source
CHUNK = 64 << 20  # bytes read (and hashed) at a time; larger files get progress lines


@dataclass(frozen=True)
class Where:
    """Where a spec value lives, for errors: the spec file people edit and the params key stages read
    (`quickstart.data.train.0`), so `dvc exp run -S` users and spec editors both find it."""

    file: str
    key: str

    def at(self, sub: str | int) -> Where:
        return Where(self.file, f"{self.key}.{sub}")

    def error(self, sub: str, message: str, hint: str | None = None) -> SpecError:
        return SpecError([self.issue(sub, message, hint)])

    def issue(self, sub: str, message: str, hint: str | None = None) -> SpecIssue:
        return SpecIssue(self.file, f"{self.key}.{sub}" if sub else self.key, message, hint=hint)


@dataclass
class Loaded:
    """One source as read: its columns (plus ROW, the record's index in the source; columns that mix JSON
    kinds stay Python objects), its manifest entry, and records that are not JSON objects at all."""

    frame: pl.DataFrame
    entry: dict
    unreadable: list[dict] = field(default_factory=list)  # {"row", "reason", "data"}



class _Digests:
    def __init__(self, md5: bool):
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if md5 else None  # only to compare with a DVC record

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.md5:
            self.md5.update(data)

    def result(self) -> dict:
        return {"sha256": self.sha256.hexdigest(), **({"md5": self.md5.hexdigest()} if self.md5 else {})}


class _Silent:
    """Progress for inputs too small to report on."""

    def update(self, done: int, extra: str = "") -> None:
        pass

    def done(self, extra: str = "") -> None:
        pass


def _progress(label: str, size: int):
    return Progress(label, -(-size >> 20), "MiB") if size > CHUNK else _Silent()


def _with_row_index(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.int_range(frame.height, dtype=pl.Int64).alias(ROW))


def read_file(path: Path, label: str, md5: bool = False) -> tuple[pl.DataFrame, list[dict], dict]:
    """(rows with ROW, records that are not JSON objects, {"sha256"[, "md5"]}) of a local file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        import pyarrow as pa

        try:
            return _read_jsonl_columnar(path, label, md5)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # a column mixes JSON kinds, or a line is not a JSON object: keep every value as it is
            return _read_jsonl_rows(path, label, md5)
    if suffix not in (".json", ".csv", ".parquet"):
        raise ValueError(f"unsupported file type '{suffix}' (use .jsonl, .json, .csv or .parquet, or a dataset folder)")
    digests = _Digests(md5)
    progress = _progress(f"{label}: hashing {path.name}", path.stat().st_size)
    with path.open("rb") as f:
        done = 0
        while block := f.read(CHUNK):
            digests.update(block)
            done += len(block)
            progress.update(done >> 20)
    if suffix == ".json":
        data = json.loads(path.read_bytes())
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError('expected a JSON array of objects, or {"data": [...]}')
        return _rows_to_frame(data, digests)
    if suffix == ".csv":  # CSV has no types: every cell is text, as written
        return _with_row_index(pl.read_csv(path, infer_schema=False)), [], digests.result()
    return _with_row_index(pl.read_parquet(path)), [], digests.result()


def _parse_json_lines(text: bytes):
    """JSON lines as an arrow table, text kept as written: pyarrow infers a column whose strings all look
    like dates ("1969-07-20") as timestamps, so such a block is parsed again with those columns as text."""
    import pyarrow as pa
    import pyarrow.json as pj

    def as_text(t: pa.DataType) -> pa.DataType:
        if pa.types.is_timestamp(t):
            return pa.string()
        if pa.types.is_list(t):
            return pa.list_(as_text(t.value_type))
        if pa.types.is_struct(t):
            return pa.struct([f.with_type(as_text(f.type)) for f in t])
        return t

    table = pj.read_json(io.BytesIO(text))
    schema = pa.schema([f.with_type(as_text(f.type)) for f in table.schema])
    if schema != table.schema:
        table = pj.read_json(io.BytesIO(text), parse_options=pj.ParseOptions(explicit_schema=schema))
    return table


def _read_jsonl_columnar(path: Path, label: str, md5: bool) -> tuple[pl.DataFrame, list[dict], dict]:
    import pyarrow as pa

    digests, tables, tail, done = _Digests(md5), [], b"", 0
    progress = _progress(f"{label}: reading {path.name}", path.stat().st_size)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digests.update(block)
            done += len(block)
            text = tail + block
            cut = text.rfind(b"\n") + 1  # parse whole lines; the rest waits for the next block
            text, tail = text[:cut], text[cut:]
            if text.strip():
                tables.append(_parse_json_lines(text))
            progress.update(done >> 20)
    if tail.strip():
        tables.append(_parse_json_lines(tail))
    # "permissive" only unifies null with a type and integers with floats; other conflicts raise
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    frame = _with_row_index(pl.from_arrow(table, rechunk=False))
    progress.done(f"{frame.height} rows")
    return frame, [], digests.result()


@dataclass
class _Unparsed:
    """A line that is not JSON: kept with the parser's complaint, to be quarantined as it is."""

    text: str
    error: str


def _read_jsonl_rows(path: Path, label: str, md5: bool) -> tuple[pl.DataFrame, list[dict], dict]:
    digests, rows, done = _Digests(md5), [], 0
    progress = _progress(f"{label}: reading {path.name} row by row", path.stat().st_size)
    with path.open("rb") as f:
        for line in f:
            digests.update(line)
            done += len(line)
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                rows.append(_Unparsed(line.decode("utf-8", "replace").rstrip("\n"), str(e)))
            if len(rows) % 100_000 == 0:
                progress.update(done >> 20)
    progress.done(f"{len(rows)} rows")
    return _rows_to_frame(rows, digests)


def _rows_to_frame(records: list, digests: _Digests) -> tuple[pl.DataFrame, list[dict], dict]:
    """A frame from parsed records, without coercion: a column whose values mix JSON kinds (text in one
    row, an object in another) is kept as Python objects, so the census sees each value's own kind."""
    import pyarrow as pa

    unreadable, rows, index = [], [], []
    for i, r in enumerate(records):
        if isinstance(r, dict):
            rows.append(r)
            index.append(i)
        elif isinstance(r, _Unparsed):
            unreadable.append({"row": i, "reason": f"not valid JSON ({r.error})", "data": r.text})
        else:
            unreadable.append({"row": i, "reason": f"not a JSON object ({KIND_WORDS[kind_of(r)]})", "data": r})
    columns = []
    for name in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(name) for r in rows]
        try:
            columns.append(pl.Series(name, pa.array(values)))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns.append(pl.Series(name, values, dtype=pl.Object))
    frame = pl.DataFrame(columns).with_columns(pl.Series(ROW, index, dtype=pl.Int64))
    return frame, unreadable, digests.result()


def _frame_digest(frame: pl.DataFrame) -> str:
    """sha256 of the rows as read (hub and folder sources: what was read, not the files around it)."""
    h = hashlib.sha256()
    for part in frame.iter_slices(100_000):
        h.update(part.write_ndjson().encode())
    return h.hexdigest()


def dvc_record(root: Path, path: Path) -> dict | None:
    """How DVC tracks a local path, if it does: its own `.dvc` file (`dvc add`), the `.dvc` file of a
    tracked folder holding it, or a pipeline output in dvc.lock. {"file", "path", "md5"[, "stage"]}."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    candidates = [rel, *list(rel.parents)[:-1]]  # the path itself, then the folders holding it
    for p in candidates:
        dvcfile = root / f"{p.as_posix()}.dvc"
        if dvcfile.is_file():
            for out in (yaml.safe_load(dvcfile.read_text()) or {}).get("outs") or []:
                if out.get("path") == p.name:  # .dvc paths are relative to the .dvc file's folder
                    return {"file": f"{p.as_posix()}.dvc", "path": p.as_posix(), "md5": out.get("md5")}
    lock = root / "dvc.lock"
    if lock.is_file():
        wanted = {p.as_posix() for p in candidates}
        for stage, body in ((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).items():
            for out in body.get("outs") or []:
                if out.get("path") in wanted:
                    return {"file": "dvc.lock", "stage": stage, "path": out["path"], "md5": out.get("md5")}
    return None


def load_source(root: Path, src: Source, where: Where, label: str) -> Loaded:
    """Read one source, with its manifest entry (where it came from, hashes, revision, row count)."""
    entry: dict = {"source": src.source}
    path = root / src.source
    try:
        if src.source.startswith("hf:"):
            ds, commit = load_hub_dataset(src.source[3:], src.config, src.split, src.revision)
            frame = _with_row_index(ds.to_polars())
            entry.update(type="hub", config=src.config, split=src.split, revision=src.revision, resolved_revision=commit,
                         pin="pinned in spec" if is_commit(src.revision) else "not pinned in spec",
                         sha256=_frame_digest(frame), sha256_of="rows")
            loaded = Loaded(frame, entry)
        elif not path.exists():
            near = did_you_mean(path.name, [p.name for p in path.parent.iterdir()]) if path.parent.is_dir() else None
            raise where.error("source", f"'{src.source}' does not exist", hint=near)
        elif path.is_dir():
            from tunebook.compiler.load import _dvc_cache_dirs  # DVC-tracked files may be symlinks into its cache

            frame = _with_row_index(load_local_dataset(path, src.config, src.split, inside=_dvc_cache_dirs(root)).to_polars())
            entry.update(type="folder", config=src.config, split=src.split, sha256=_frame_digest(frame), sha256_of="rows")
            loaded = Loaded(frame, entry)
        else:
            dvc = dvc_record(root, path)
            exact = bool(dvc and dvc["path"] == path.resolve().relative_to(root.resolve()).as_posix())
            frame, unreadable, digests = read_file(path, label, md5=exact)
            entry.update(type="file", sha256=digests["sha256"], sha256_of="file", bytes=path.stat().st_size)
            if dvc:
                entry["dvc"] = dvc | ({"matches": digests["md5"] == dvc["md5"]} if exact else {})
            loaded = Loaded(frame, entry, unreadable)
    except HubError as e:
        raise where.error(e.field, str(e)) from None
    except (ValueError, OSError, pl.exceptions.PolarsError) as e:
        raise where.error("source", f"cannot read '{src.source}': {e}") from None
    # categorical columns (parquet, hub) are text for every purpose here
    loaded.frame = loaded.frame.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String))
    loaded.entry["rows_in_source"] = loaded.frame.height + len(loaded.unreadable)
    if src.limit:
        loaded.frame = loaded.frame.filter(pl.col(ROW) < src.limit)
        loaded.unreadable = [u for u in loaded.unreadable if u["row"] < src.limit]
    loaded.entry["rows_read"] = loaded.frame.height + len(loaded.unreadable)
    return loaded


def read_source(root: Path, src: Source, key: str) -> tuple[list[dict], dict]:
    """Rows of one source as dicts, and its manifest entry (for stages that need a few rows, e.g. eval)."""
    loaded = load_source(root, src, Where("params.yaml", key.removesuffix(".source")), key)
    return loaded.frame.drop(ROW).to_dicts(), loaded.entry


def read_local(path: Path) -> list[dict]:
    """Rows of a local file as dicts; ValueError if a record is not a JSON object."""
    frame, unreadable, _ = read_file(path, path.name)
    if unreadable:
        u = unreadable[0]
        raise ValueError(f"{path}: record {u['row']} is {u['reason']}; {len(unreadable)} such record(s)")
    return frame.drop(ROW).to_dicts()
