"""Remove what dead runs left in a lake: write folders that no Delta commit references (`w-*` inside a table)
and temporary packing folders (`.<out>-tmp-*`), plus stale lease files.

    python jobs/vacuum.py --lake DIR [--dry-run]

A table or packed folder that a live run is writing (it holds the lease, see jobs/leases.py) is left alone and
named. Committed data, old table versions included, is never touched: this is not Delta's VACUUM of removed files.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

from jobs.leases import STALE_S, LeaseError, Leases, read_lease  # noqa: E402
from jobs.tables import TableError, remove_uncommitted  # noqa: E402
from udfs.common import UserError, run_main  # noqa: E402


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def vacuum(lake_root: str, dry_run: bool = False, log=print) -> dict:
    if "://" in lake_root:
        raise UserError(f"--lake {lake_root}: jobs/vacuum.py cleans a local or mounted lake; on object storage each "
                        f"stage removes what a dead run left in the tables it writes when it takes their leases, and "
                        f"Delta's own VACUUM removes old files (docs/cluster.md)")
    root = os.path.abspath(lake_root)
    if not os.path.isdir(root):
        raise TableError(f"lake {root} is not a folder")
    leases = Leases(root, f"vacuum-{uuid.uuid4().hex[:8]}", "vacuum")
    removed, busy, freed = [], [], 0
    try:
        for name in sorted(os.listdir(root)):
            table = os.path.join(root, name)
            if name.startswith(("_", ".")) or not os.path.isdir(os.path.join(table, "_delta_log")):
                continue
            try:
                leases.acquire([name])
            except LeaseError as e:
                busy.append(name)
                log(f"vacuum: skipped {name}: {e}")
                continue
            gone = remove_uncommitted(table, dry_run=True)
            freed += sum(_size(os.path.join(table, d)) for d in gone)
            removed += [os.path.join(name, d) for d in gone]
            if not dry_run:
                for d in gone:
                    shutil.rmtree(os.path.join(table, d), ignore_errors=True)
            leases.release()
        for name in sorted(os.listdir(root)):  # .<out>-tmp-<hex> folders of pack runs (see jobs/pack.py)
            full = os.path.join(root, name)
            if not (name.startswith(".") and "-tmp-" in name and os.path.isdir(full)):
                continue
            out = os.path.join(root, name[1:].split("-tmp-", 1)[0])
            other = read_lease(root, f"packed:{out}")
            if other and other["alive"]:
                busy.append(name)
                log(f"vacuum: skipped {name}: a live pack run ({other.get('run_id')}) is writing {out}")
                continue
            freed += _size(full)
            removed.append(name)
            if not dry_run:
                shutil.rmtree(full, ignore_errors=True)
        lease_dir = os.path.join(root, "_leases")
        if os.path.isdir(lease_dir) and not dry_run:
            for fn in os.listdir(lease_dir):
                full = os.path.join(lease_dir, fn)
                # moved-aside leases of dead runs, and lease records a killed run wrote but never linked in
                if ".stale-" in fn or (".new-" in fn and time.time() - os.path.getmtime(full) > STALE_S):
                    os.remove(full)
    finally:
        leases.release()
    verb = "would remove" if dry_run else "removed"
    log(f"vacuum: {verb} {len(removed)} leftover folder(s), {freed / 1e6:.1f} MB" +
        (f"; {len(busy)} busy: {', '.join(busy)}" if busy else ""))
    for r in removed:
        log(f"  {r}")
    return {"removed": removed, "busy": busy, "bytes": freed}


def main(argv=None):
    p = argparse.ArgumentParser(prog="vacuum", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root folder (default ./lake)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also LMR_DEBUG=1)")
    args = p.parse_args(argv)
    if not os.path.exists(args.lake):
        raise UserError(f"lake {os.path.abspath(args.lake)} does not exist")
    vacuum(args.lake, args.dry_run, log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("vacuum", main))
