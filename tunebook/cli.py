"""The `tunebook` command line. Heavy imports live inside the commands, so `compile`, `report` and
`review` start fast and never import torch.

Exit codes: 0 ok, 1 a stage failed, 2 bad input (spec, record, arguments), 3 generated files are
stale or were edited by hand. Tracebacks only with --verbose.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import click

ROOT_HELP = "project root (default: the current directory)"


class Ctx:
    def __init__(self, root: Path, verbose: bool):
        self.root, self.verbose = root, verbose


def _fail(ctx: Ctx, exc: BaseException) -> None:
    from tunebook.compiler.errors import printable  # lazy: each command imports only what it uses (cold start)
    from tunebook.reports.record import RecordError  # lazy: each command imports only what it uses (cold start)

    code = 2 if isinstance(exc, RecordError) else getattr(exc, "exit_code", 1)  # a bad record is bad input
    if ctx.verbose:
        traceback.print_exception(exc)

    msg = printable(str(exc) or type(exc).__name__, keep_newlines=True)
    click.echo(("error: " if code != 3 else "") + msg, err=True)
    if code == 1 and not ctx.verbose and getattr(exc, "traceback_helps", True):
        click.echo("(rerun with `tunebook -v ...` for the traceback)", err=True)
    sys.exit(code)


def _guard(fn):
    """Map known errors to exit codes; anything else is a failure with a one-line message."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        ctx = click.get_current_context().find_object(Ctx)
        try:
            return fn(*a, **kw)
        except click.exceptions.Exit:
            raise
        except KeyboardInterrupt:
            click.echo("interrupted; finished work is kept, `dvc repro` resumes", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - the CLI boundary
            _fail(ctx, e)

    return wrapper


def _late_verbose(cc: click.Context, _param, value: bool) -> None:
    if value:
        cc.find_object(Ctx).verbose = True


def _late_root(cc: click.Context, _param, value: Path | None) -> None:
    if value is not None:  # after the group's -C, like a second `git -C`: relative to the first
        os.chdir(value)
        cc.find_object(Ctx).root = Path.cwd()


def global_options(fn):
    """-v and -C after the subcommand too (`tunebook compile -v`), as git and dvc take them."""
    fn = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_late_verbose, help="show tracebacks")(fn)
    return click.option("-C", "--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                        expose_value=False, callback=_late_root, help=ROOT_HELP)(fn)


class Group(click.Group):
    """Every subcommand takes the global options as well."""

    def command(self, *args, **kwargs):
        make = super().command(*args, **kwargs)
        return lambda fn: make(global_options(fn))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="show tracebacks")
@click.option("-C", "--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=".", help=ROOT_HELP)
@click.version_option(package_name="tunebook")
@click.pass_context
def main(cc: click.Context, verbose: bool, root: Path) -> None:
    """tunebook: fine-tuning experiments as specs, compiled to DVC, logged as reproducible reports.

    \b
    tunebook compile          specs/*.yaml -> dvc.yaml + params.yaml
    dvc repro                 run what changed (stages call `tunebook run ...`)
    tunebook report <exp>     render logs/<exp>.md from runs/<exp>/record.json
    tunebook review           one log across experiments and `dvc exp` variants
    tunebook smoke            every spec as a miniature on builtin:tiny, run end to end (docs/studies.md)
    tunebook status           each stage done, stale or pending (and its SLURM job)
    tunebook repair           mend a dvc.lock DVC left cut short when killed ('dvc.lock' validation failed)
    """
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    # like `git -C`: run as if started there, so relative paths in specs resolve against the project
    os.chdir(root)
    cc.obj = Ctx(Path.cwd(), verbose)


@main.command()
@click.argument("specs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="fail (exit 3) if dvc.yaml/params.yaml are not what the specs compile to")
@click.option("--force", is_flag=True, help="overwrite dvc.yaml/params.yaml even if they were edited by hand")
@click.option("--missing-ok", is_flag=True, help="write even if input files are not there yet (data to fetch later); they are warned about")
@click.option("--smoke", is_flag=True, help="write the specs' miniatures on builtin:tiny as their own project in --out")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="with --smoke: the smoke project (default .smoke)")
@click.pass_obj
@_guard
def compile(ctx: Ctx, specs: tuple[Path, ...], check: bool, force: bool, missing_ok: bool, smoke: bool, out: Path | None) -> None:
    """Validate specs and write dvc.yaml and params.yaml (all specs in specs/ by default)."""
    from tunebook.compiler import compile_specs, discover, load_specs, write_pipeline  # lazy: each command imports only what it uses (cold start)

    if smoke:
        if check:
            raise click.UsageError("--check compares the full pipeline; it does not combine with --smoke")
        _compile_smoke(ctx, specs, out)
        return
    from tunebook.compiler.serial import pipeline_specs, project_lock  # lazy: each command imports only what it uses (cold start)

    # one compile at a time writes this project's files; the pipeline is always every spec (issue 16)
    click.get_current_context().with_resource(project_lock(ctx.root, say=lambda m: click.echo(m, err=True)))
    paths, _ = pipeline_specs(ctx.root, [Path(p) for p in specs], discover)
    if not paths:
        raise click.UsageError(f"no specs found in {ctx.root / 'specs'} (files starting with '_' are bases only)")
    loaded = load_specs(paths, ctx.root)
    from tunebook.compiler.policy import secret_warnings  # lazy: each command imports only what it uses (cold start)

    for warning in secret_warnings(loaded, ctx.root):  # a pasted token: said, never echoed (issue 16)
        click.echo(f"warning: {warning}", err=True)
    pipeline = compile_specs(loaded)
    _check_inputs(loaded, ctx.root, pipeline, missing="warn" if check or missing_ok else "error")  # before writing: a mistake changes nothing
    changed = write_pipeline(ctx.root, pipeline, check=check, force=force)
    for note in changed.notes:  # a kept `dvc exp` variant: not an error, but said
        click.echo(note, err=True)
    if not check:
        from tunebook.compiler.ignore import write_gitignore  # lazy: each command imports only what it uses (cold start)

        if write_gitignore(ctx.root, pipeline):  # cached outputs ignored before anything runs
            changed = [*changed, ".gitignore"]
    names = ", ".join(ls.spec.name for ls in loaded)
    if specs and len(loaded) > len(specs):
        click.echo(f"checked {', '.join(map(str, specs))} together with the rest of specs/: dvc.yaml and params.yaml "
                   "always hold every experiment (compiling one spec alone would drop the others' stages)", err=True)
    if check:
        click.echo(f"up to date: {len(loaded)} spec(s) ({names})")
    else:
        what = ", ".join(changed) if changed else "nothing changed"
        click.echo(f"compiled {len(loaded)} spec(s) ({names}): {what}. Next: `dvc repro`")


def _check_inputs(loaded, root: Path, pipeline, missing: str) -> None:
    """What the files on disk say about the specs (compiler/inputs.py). An input that is not there is an
    "error", or a "warn"ing (--check: the data may not have been fetched here), or "ignore"d (smoke)."""
    from tunebook.compiler.errors import SpecError  # lazy: each command imports only what it uses (cold start)
    from tunebook.compiler.inputs import check_inputs, stage_outputs  # lazy: each command imports only what it uses (cold start)

    found = check_inputs(loaded, root, stage_outputs(pipeline) if pipeline else [])
    if missing == "warn":
        for issue in found.missing:
            click.echo(f"warning: {issue}", err=True)
    errors = found.errors + (found.missing if missing == "error" else [])
    if errors:
        raise SpecError(errors)


def _compile_smoke(ctx: Ctx, specs: tuple[Path, ...], out: Path | None):
    """Write the smoke project (compiler/smoke.py) and return its folder. It is a git and DVC project of
    its own: DVC refuses a dvc.yaml inside a git-ignored folder, and the study's committed full-scale
    dvc.yaml and params.yaml must stay as they are."""
    from tunebook.compiler import discover, load_specs  # lazy: each command imports only what it uses (cold start)
    from tunebook.compiler.smoke import build  # lazy: each command imports only what it uses (cold start)

    paths = [Path(p) for p in specs] or discover(ctx.root / "specs")
    if not paths:
        raise click.UsageError(f"no specs found in {ctx.root / 'specs'} (files starting with '_' are bases only)")
    loaded = load_specs(paths, ctx.root)  # the full specs first: an error there is the study's, not smoke's
    _check_inputs(loaded, ctx.root, None, missing="ignore")  # stand-ins replace the data; names and columns still count
    out = (out or ctx.root / ".smoke").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / ".git").exists():
        _tool(["git", "init", "-q"], out)
    if not (out / ".dvc").exists():
        _tool([_dvc(), "init", "-q"], out)
    built = build(loaded, ctx.root, out)
    # Committed, like any project tunebook runs in: dvclive (training curves) refuses a git repo
    # without a commit, and `dvc exp show` (the review) needs one to compare against. Only the
    # generated inputs: stage outputs are DVC's to track.
    _tool(["git", "add", "-A", "--", ".dvc", ".dvcignore", *built.files], out)
    _tool(["git", "-c", "user.name=tunebook smoke", "-c", "user.email=smoke@tunebook.invalid", "commit", "-q",
           "--allow-empty", "-m", f"smoke project of {ctx.root.name}"], out)
    click.echo(f"smoke project {_rel(out, ctx.root)}: {len(built.names)} experiment(s), {len(built.run)} code path(s) "
               f"({', '.join(built.run)}); what each miniature changed and which runs cover which: "
               f"{_rel(out / 'SMOKE.md', ctx.root)}. Next: `dvc repro` there")
    return out, built


def _dvc() -> str:
    dvc = Path(sys.executable).with_name("dvc")
    return str(dvc) if dvc.exists() else "dvc"


def _tool(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {cwd}: {(res.stderr or res.stdout).strip()[:500]}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="the smoke project (default .smoke)")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="DVC cache to use (share one between studies: the tiny model is then pre-trained once)")
@click.option("--all", "run_all", is_flag=True, help="run every experiment, not one per code path")
@click.pass_obj
@_guard
def smoke(ctx: Ctx, out: Path | None, cache: Path | None, run_all: bool) -> None:
    """Run this project's specs as miniatures on builtin:tiny: `compile --smoke`, then `dvc repro` and
    `tunebook review` in the smoke project. Experiments that differ only in values (a learning rate, a
    dataset) share a code path: one of each runs unless --all; SMOKE.md says which covers which.
    Its log: smoke.log, logs/*.md, logs/review.md."""
    out, built = _compile_smoke(ctx, (), out)
    targets = [] if run_all else [f"report-{name}" for name in built.run]  # DVC runs what they need
    if cache:
        _tool([_dvc(), "cache", "dir", str(cache.resolve())], out)
    t0 = time.time()
    # the stage commands call `tunebook`: the one next to this Python, whatever PATH says
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "DVC_NO_ANALYTICS": "1"}
    with (out / "smoke.log").open("w") as log:
        proc = subprocess.Popen([_dvc(), "repro", *targets], cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            click.echo(line, nl=False)
            log.write(line)
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"`dvc repro` failed in {_rel(out, ctx.root)} (exit {code}); its output is in "
                           f"{_rel(out / 'smoke.log', ctx.root)}")
    _tool([sys.executable, "-m", "tunebook", "-C", str(out), "review"], out)
    ran = len(built.names) if run_all else len(built.run)
    click.echo(f"smoke run of {ctx.root.name} passed in {time.time() - t0:.0f}s ({ran} of {len(built.names)} experiments). "
               f"Logs: {_rel(out / 'logs', ctx.root)}/*.md, "
               f"review: {_rel(out / 'logs' / 'review.md', ctx.root)}, replacements: {_rel(out / 'SMOKE.md', ctx.root)}")


@main.command()
@click.argument("kind", type=click.Choice(["pretrain", "data", "teacher", "train", "baseline", "eval", "report"]))
@click.argument("name")
@click.pass_obj
@_guard
def run(ctx: Ctx, kind: str, name: str) -> None:
    """Run one stage (what dvc.yaml calls): KIND is the stage kind, NAME the experiment or key."""
    from tunebook.runtime import stages  # lazy: the stage modules import torch

    stages.run_stage(ctx.root, kind, name)


@main.command()
@click.pass_obj
@_guard
def status(ctx: Ctx) -> None:
    """Each stage: done, stale or pending, and the SLURM job of a stage that runs as one (docs/cluster.md)."""
    from tunebook.runtime import lockfile  # lazy: each command imports only what it uses (cold start)
    from tunebook.runtime import status as st  # lazy: each command imports only what it uses (cold start)

    found = lockfile.damage(ctx.root)
    if found is not None and found.dvc_refuses:  # DVC refuses every command until it is mended
        raise lockfile.Damaged(f"dvc.lock is damaged: {found.why}. DVC was most likely killed while writing it; "
                               "`tunebook repair` mends it (nothing computed is lost)")
    if found is None:
        lockfile.keep_whole_copy(ctx.root)  # a fresher copy for `tunebook repair`, should a later DVC write be cut
    else:  # DVC takes it, and would rerun the stages whose entries were cut off
        click.echo(f"warning: dvc.lock {found.why}: DVC was most likely killed while writing it, and would rerun "
                   "the stages whose entries it lost. `tunebook repair` restores them first", err=True)
    click.echo(st.render(st.rows(ctx.root)))


@main.command()
@click.pass_obj
@_guard
def repair(ctx: Ctx) -> None:
    """Mend dvc.lock (and .dvc/tmp/rwlock) that DVC left cut short when it was killed mid-write (docs/reliability.md)."""
    from tunebook.runtime import lockfile  # lazy: each command imports only what it uses (cold start)

    with lockfile.dvc_idle(ctx.root):
        mended = lockfile.repair(ctx.root)
        rwlock = lockfile.repair_rwlock(ctx.root)
    if rwlock is not None:
        click.echo(f"{lockfile.RWLOCK} (DVC's record of running stages' reads and writes) was cut short; no DVC "
                   f"command is running, so it is set aside: {_rel(rwlock, ctx.root)}")
    if mended is not None:
        click.echo(lockfile.describe(mended, ctx.root))
    elif rwlock is None:
        click.echo("dvc.lock is whole: nothing to mend" if (ctx.root / lockfile.LOCK).exists() else "no dvc.lock here: nothing to mend")
    else:
        click.echo("dvc.lock is whole. Next: `dvc repro`")


@main.command()
@click.argument("experiment", required=False)
@click.option("--record", "record_path", type=click.Path(dir_okay=False, path_type=Path), help="render this record file instead")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="output markdown (default logs/<exp>.md)")
@click.option("--force", is_flag=True, help="let a record other than runs/<exp>/record.json overwrite a pipeline experiment's log")
@click.pass_obj
@_guard
def report(ctx: Ctx, experiment: str | None, record_path: Path | None, out: Path | None, force: bool) -> None:
    """Render an experiment log from a run record (any valid record, hand-written ones too)."""
    from tunebook.reports.intake import load_record  # lazy: each command imports only what it uses (cold start)
    from tunebook.reports.render import write_report  # lazy: each command imports only what it uses (cold start)

    if record_path is None:
        if not experiment:
            raise click.UsageError("give an EXPERIMENT name or --record PATH")
        record_path = ctx.root / "runs" / experiment / "record.json"
    from tunebook.reports.intake import guard_overwrite, log_name  # lazy: each command imports only what it uses (cold start)

    rec = load_record(record_path)
    # a record is input, not trusted: its name maps to one file or is refused, and a record brought by
    # hand never overwrites a pipeline experiment's log without --force (issue 16)
    out = out or ctx.root / "logs" / f"{log_name(rec.experiment)}.md"
    guard_overwrite(ctx.root, record_path, rec.experiment, out, force)
    write_report(record_path, out)
    click.echo(f"wrote {_rel(out, ctx.root)}")


@main.command()
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="default logs/review.md")
@click.option("--no-dvc", is_flag=True, help="do not ask dvc for experiments and stage status")
@click.pass_obj
@_guard
def review(ctx: Ctx, out: Path | None, no_dvc: bool) -> None:
    """One log across all experiments (runs/*/record.json) and their `dvc exp` variants."""
    from tunebook.reports.review import write_review  # lazy: each command imports only what it uses (cold start)

    records = sorted(p for p in (ctx.root / "runs").glob("*/record.json") if not p.parent.name.startswith("_"))
    exp_show = status = None
    if not no_dvc and (ctx.root / ".dvc").is_dir():
        exp_show = _dvc_json(ctx.root, ["exp", "show", "--json"])
        status = _dvc_json(ctx.root, ["status", "--json"])
    out = out or ctx.root / "logs" / "review.md"
    write_review(records, out, exp_show=exp_show, dvc_status=status)
    click.echo(f"wrote {_rel(out, ctx.root)} ({len(records)} record(s))")


def _dvc_json(root: Path, args: list[str]):
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.exists() else "dvc", *args]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if res.returncode != 0:
        click.echo(f"warning: `dvc {' '.join(args)}` failed, review goes on without it: {res.stderr.strip()[:300]}", err=True)
        return None
    try:
        return json.loads(res.stdout or "null")
    except json.JSONDecodeError:
        return None


@main.command()
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="default specs/schema.json; - writes to standard output")
@click.option("--record", "record", is_flag=True, help="export the run record's schema instead of the spec's")
@click.pass_obj
@_guard
def schema(ctx: Ctx, out: Path | None, record: bool) -> None:
    """Write the JSON Schema of spec files (for editor completion and checks) or of run records."""
    if record:
        from tunebook.reports.record import Record  # lazy: each command imports only what it uses (cold start)

        text = json.dumps(Record.model_json_schema(), indent=1, sort_keys=True) + "\n"
    else:
        from tunebook.compiler.schema import file_schema_text  # lazy: each command imports only what it uses (cold start)

        text = file_schema_text()
    if out is not None and str(out) == "-":
        click.echo(text, nl=False)
        return
    out = out or ctx.root / ("docs/record.schema.json" if record else "specs/schema.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    click.echo(f"wrote {_rel(out, ctx.root)}")


@main.command()
@click.option("--name", default="first", show_default=True, help="name of the starter experiment")
@click.pass_obj
@_guard
def init(ctx: Ctx, name: str) -> None:
    """Adopt tunebook in an existing git repository: specs/, `dvc init` if needed, compile."""
    from tunebook.scaffold import init_project  # lazy: each command imports only what it uses (cold start)

    for line in init_project(ctx.root, name):
        click.echo(line)


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.resolve().relative_to(root))
    except ValueError:
        return str(p)


if __name__ == "__main__":
    main()
