"""Argument parsing and error reporting shared by the jobs.

Every job: exit 0 on success; on a user error (bad argument, missing table, unreadable input) one line
`<job>: error: <cause>` on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import sys
import traceback


class UserError(Exception):
    """An error caused by the input or arguments; printed as one line, no traceback."""


def base_parser(prog: str, description: str, input_table: str | None = None,
                output_table: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root folder holding the Delta tables (default ./lake)")
    p.add_argument("--conf", default=None, help="pipeline config YAML (default conf/pipeline.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set filter.langid.threshold=0.5 (repeatable)")
    if input_table:
        p.add_argument("--input-table", default=input_table, help=f"table to read (default {input_table})")
    if output_table:
        p.add_argument("--output-table", default=output_table, help=f"table to write (default {output_table})")
    p.add_argument("--master", default=None,
                   help="Spark master when run with plain python (default local[*]; spark-submit's wins)")
    p.add_argument("--force", action="store_true",
                   help="run even if the metrics table says this stage already ran on this input and config")
    return p


def run_main(prog: str, main, argv=None) -> int:
    """Call `main(argv)`; map user errors to a one-line message and exit code 2."""
    from jobs.config import ConfigError
    from jobs.tables import TableError

    try:
        rc = main(argv)
        return 0 if rc is None else int(rc)
    except (UserError, ConfigError, TableError, FileNotFoundError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal failure: keep the traceback, but end with a one-line cause
        traceback.print_exc()
        line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"{prog}: failed: {e.__class__.__name__}: {line}", file=sys.stderr)
        return 1
