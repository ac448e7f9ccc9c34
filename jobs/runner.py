"""One runner for every table stage: a stage declares what it is, the runner does the rest.

A stage module declares a `Stage`: its name, the table it reads, the tables it writes, the CLI flags that set
its config keys, a `resolve` that checks and completes its parameters before anything starts, an optional
`prepare` for driver-side work that needs no Spark (reading benchmark files, say), and a `plan` that turns the
pinned input into its outputs through `ctx.run.write(...)` and `ctx.run.finish(...)`. Its `main` is then

    def main(argv=None):
        return run_stage(STAGE, argv)

and `run_stage` owns everything around it, the same way for every stage:
 1. CLI: the common flags (--lake, --conf, --set, --input-table, the output tables, --master, --force, --debug),
    the stage's own flags, and in --help every parameter of its config section with its default and doc
    (from conf/pipeline.yaml, the declaration of all parameters);
 2. config: the section after --conf and --set, checked strictly (jobs/config.py), then the flags on top;
 3. `resolve` (one-line UserError on a bad value), `prepare`;
 4. Spark session, lake, the input table's existence and its version pinned for the whole run;
 5. the write leases of the outputs (a second live writer fails with one line), leftovers of dead runs removed,
    and skip-if-done before any Spark job (the metrics table: same input version, config and outputs);
 6. `plan`, with a progress line per running Spark stage every LMR_PROGRESS_S seconds (jobs/progress.py);
    the conservation check and the metrics row happen in `ctx.run.finish`.
`python jobs/<stage>.py` and `spark-submit jobs/<stage>.py` both end in `run_main(name, main)`.
"""
from __future__ import annotations

import argparse
import time
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from jobs.cli import UserError, base_parser
from jobs.config import DEFAULT_PIPELINE_CONF, load_config


@dataclass
class Flag:
    """A CLI flag that sets one key of the stage's config section (the flag wins over config and --set);
    with `key=None` a plain argument of the stage (on `ctx.args`, named after the flag)."""
    flag: str
    key: str | None
    help: str
    type: Callable | None = None
    choices: tuple | list | None = None
    store_true: bool = False
    default: Any = None

    @property
    def dest(self) -> str:
        return self.key or self.flag.lstrip("-").replace("-", "_")


@dataclass
class Stage:
    name: str
    doc: str                                   # --help text (first line: what the stage does)
    input_table: str | None                    # default of --input-table; None: the stage reads no table
    outputs: dict[str, str]                    # argparse dest -> default table name; the first is the main one
    plan: Callable[["Context"], Any]
    flags: list[Flag] = field(default_factory=list)
    resolve: Callable[[dict, argparse.Namespace], dict] | None = None
    prepare: Callable[["Context"], None] | None = None
    input_hint: str = "run the stage before it first, or pass --input-table"
    config_section: str | None = None          # default: the stage name
    input_key: str | None = None               # config key naming the input table when --input-table is not given
    extra_leases: Callable[["Context"], list] | None = None  # what else the run writes (a packed folder)
    early: Callable[["Context"], int | None] | None = None   # after the input is pinned, before the skip check;
                                                             # an int return ends the run (e.g. a report-only mode)
    still_done: Callable[["Context"], bool] | None = None    # a finished run also needs this (its files intact)
    recover: Callable[["Context"], Any] | None = None        # all outputs committed by an earlier attempt of
                                                             # this run, no metrics row: finish from the tables


@dataclass
class Context:
    """What a stage's `prepare` and `plan` get: arguments, parameters, tables, and (in `plan`) Spark, the lake
    and the StageRun."""
    stage: Stage
    args: argparse.Namespace
    params: dict
    tables: dict[str, str]
    run_config: dict | None = None             # what identifies the run (default: params); set by prepare
    extra_key: Any = None                      # more run identity (file digests, model fingerprints)
    spark: Any = None
    lake: Any = None
    run: Any = None
    state: dict = field(default_factory=dict)  # prepare -> plan

    @property
    def output(self) -> str:
        return next(iter(self.tables.values()))

    def input(self):
        """The input table at the version pinned when the run started."""
        return self.lake.read(self.args.input_table, version=self.state["input_version"])


def param_lines(section: str, path: str = DEFAULT_PIPELINE_CONF) -> list[str]:
    """`  section.key = default   doc` for every key of a section of conf/pipeline.yaml (read as text, so the
    comments, which are the parameters' docs, survive)."""
    out, stack, inside = [], [], False
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        m = re.match(r"^(\s*)([A-Za-z_][\w]*):\s*(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        if indent == 0:
            inside = key == section
            stack = [(0, key)]
            continue
        if not inside:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        value, _, doc = rest.partition("#")
        dotted = ".".join(k for _, k in stack)
        if value.strip():
            out.append(f"  {dotted} = {value.strip()}" + (f"   {doc.strip()}" if doc.strip() else ""))
        elif doc.strip():
            out.append(f"  {dotted}.*   {doc.strip()}")
    return out


def build_parser(stage: Stage) -> argparse.ArgumentParser:
    section = stage.config_section or stage.name
    params = param_lines(section)
    epilog = (f"parameters (conf/pipeline.yaml section '{section}'; set with --set KEY=VALUE):\n" + "\n".join(params)
              if params else None)
    main_out = next(iter(stage.outputs.values()), None)
    p = base_parser(stage.name, stage.doc, input_table=stage.input_table, output_table=main_out)
    p.epilog = epilog
    if stage.input_key:  # the config names the default input table
        p.set_defaults(input_table=None)
    for dest, default in list(stage.outputs.items())[1:]:
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, default=default,
                       help=f"table to write (default {default})")
    for fl in stage.flags:
        kw = {"dest": fl.dest, "default": fl.default, "help": fl.help}
        if fl.store_true:
            kw["action"] = "store_true"
        else:
            if fl.type:
                kw["type"] = fl.type
            if fl.choices:
                kw["choices"] = list(fl.choices)
        p.add_argument(fl.flag, **kw)
    return p


def run_stage(stage: Stage, argv=None) -> int:
    from jobs.session import get_spark
    from jobs.stage import StageRun
    from jobs.tables import Lake, TableError, check_table_name

    args = build_parser(stage).parse_args(argv)
    params = dict(load_config(args.conf, args.overrides).get(stage.config_section or stage.name) or {})
    for fl in stage.flags:
        value = getattr(args, fl.dest)
        if fl.key and value is not None and not (fl.store_true and value is False):
            params[fl.key] = value
    if stage.resolve:
        params = stage.resolve(params, args)
    if stage.input_key:
        args.input_table = args.input_table or params.get(stage.input_key) or stage.input_table
    tables = {dest: getattr(args, "output_table" if i == 0 else dest) for i, dest in enumerate(stage.outputs)}
    for t in list(tables.values()) + ([args.input_table] if stage.input_table else []):
        check_table_name(t)
    if len(set(tables.values())) != len(tables) or (stage.input_table and args.input_table in tables.values()):
        raise UserError(f"{stage.name}: the input and output tables must all differ "
                        f"(input {getattr(args, 'input_table', None)}, outputs {', '.join(tables.values())})")
    ctx = Context(stage=stage, args=args, params=params, tables=tables)
    if stage.prepare:
        stage.prepare(ctx)

    t_session = time.perf_counter()
    ctx.spark = get_spark(f"lmrefinery-{stage.name}", master=args.master)
    t_session = time.perf_counter() - t_session
    ctx.lake = Lake(ctx.spark, args.lake)
    input_version = None
    if stage.input_table:
        input_version = ctx.lake.version(args.input_table)
        if input_version is None:
            raise TableError(f"input table '{args.input_table}' not found under lake {ctx.lake.root} "
                             f"({stage.input_hint})")
    ctx.state["input_version"] = input_version
    if stage.early:
        rc = stage.early(ctx)
        if rc is not None:
            return int(rc)
    ctx.run = StageRun(ctx.lake, stage.name, ctx.run_config if ctx.run_config is not None else params,
                       args.input_table if stage.input_table else None, list(tables.values()), force=args.force,
                       input_version=input_version, extra_key=ctx.extra_key,
                       extra_leases=stage.extra_leases(ctx) if stage.extra_leases else None)
    ctx.run.session_seconds = t_session
    if ctx.run.already_done(quiet=stage.still_done is not None) and (stage.still_done is None or
                                                                       stage.still_done(ctx)):
        return 0
    ctx.run.hold()
    if stage.recover and ctx.run.outputs_committed():
        from jobs.stage import log

        log(f"{stage.name}: {', '.join(tables.values())} already hold this run's output (an earlier attempt "
            f"died before its metrics row); recording the metrics from them without computing again")
        stage.recover(ctx)
        return 0
    from jobs.progress import Progress
    from jobs.stage import log

    with Progress(ctx.spark, stage.name, log):  # a line per running Spark stage every LMR_PROGRESS_S seconds
        rc = stage.plan(ctx)
    return 0 if rc is None else int(rc)


def stage_main(stage: Stage):
    """`main(argv)` for a declared stage."""
    def main(argv=None):
        return run_stage(stage, argv)
    main.__doc__ = f"Run the {stage.name} stage (see jobs/runner.py)."
    return main


__all__ = ["Context", "Flag", "Stage", "param_lines", "run_stage", "stage_main"]
