"""Argument parsing and error reporting shared by the jobs.

Every job: exit 0 on success; on a user error (bad argument or config key, missing or broken table, unreadable
input) one line `<job>: error: <cause>` on stderr and exit 2; `--debug` (or LMR_DEBUG=1) adds the traceback.
"""
from __future__ import annotations

import argparse

from udfs.common import UserError, run_main

__all__ = ["UserError", "base_parser", "run_main"]


def base_parser(prog: str, description: str, input_table: str | None = None,
                output_table: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root folder holding the Delta tables (default ./lake)")
    p.add_argument("--conf", default=None, help="pipeline config YAML (default conf/pipeline.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set filter.langid.threshold=0.5 (repeatable); unknown "
                        "keys and values of the wrong kind are refused")
    if input_table:
        p.add_argument("--input-table", default=input_table, help=f"table to read (default {input_table})")
    if output_table:
        p.add_argument("--output-table", default=output_table, help=f"table to write (default {output_table})")
    p.add_argument("--master", default=None,
                   help="Spark master when run with plain python (default local[*]; spark-submit's wins)")
    p.add_argument("--force", action="store_true",
                   help="run even if the metrics table says this stage already ran on this input and config")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also LMR_DEBUG=1)")
    return p
