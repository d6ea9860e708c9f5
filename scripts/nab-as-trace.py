#!/usr/bin/env python3
"""Writes NAB series as one `simulate --trace` file: `timestamp,series,value`.

Usage: scripts/nab-as-trace.py DIR > trace.csv

Each CSV under DIR (`timestamp,value`, as NAB ships them) becomes a service named after
its file, its values taken as requests per second. The series were recorded in different
weeks; each is moved by whole weeks to start within half a week of 2014-03-03 (a Monday),
so their weekdays and times of day are kept and the services run side by side instead of
one after another (simulate holds a service's last value after its last point).
"""
import csv
import datetime as dt
import pathlib
import sys

REFERENCE = dt.datetime(2014, 3, 3)
WEEK = dt.timedelta(days=7)
FORMAT = "%Y-%m-%d %H:%M:%S"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    files = sorted(pathlib.Path(sys.argv[1]).rglob("*.csv"))
    if not files:
        print(f"no CSV under {sys.argv[1]}", file=sys.stderr)
        return 1
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["timestamp", "series", "value"])
    for path in files:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "timestamp" not in rows[0] or "value" not in rows[0]:
            print(f"{path}: not timestamp,value; skipped", file=sys.stderr)
            continue
        first = dt.datetime.strptime(rows[0]["timestamp"], FORMAT)
        shift = round((first - REFERENCE) / WEEK) * WEEK
        for r in rows:
            t = dt.datetime.strptime(r["timestamp"], FORMAT) - shift
            out.writerow([t.strftime(FORMAT), path.stem, r["value"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
