#!/usr/bin/env python3
"""Writes a transformed copy of a NAB corpus, to check that the detector generalises.

Usage: scripts/nab-transform.py SRC DST MODE [SEED]

SRC is a NAB-format folder (`windows.json`, `labels.json` and category folders of
`timestamp,value` CSVs); DST receives the same layout. MODE:
- `scaled`: every value × 1000 (other units);
- `moved`: every value + 1000 × its file's range (a gauge far from zero);
- `thinned`: 20 % of the rows outside the labelled windows dropped at random
  (irregular sampling; the windows and their anomalies kept whole);
- `gappy`: outside the windows, now and then 1–6 hours of rows missing (an agent down);
- `every3`, `every12`: every third (twelfth) row kept, 15-minute (hourly) points from
  5-minute ones, and the rows the windows start and end on (NAB needs them). A
  one-point spike is kept only when it falls on a kept row;
- `jittered`: Gaussian noise of 0.5 % of the file's range added to every value;
- `mirrored`: every value v → max + min − v (spikes become dips, still positive);
- `paused`: a day of rows missing right after the probation, except inside windows
  (an agent down for a day);
- `longer`: the file's first 15 % (its probation, free of anomalies) repeated four times
  before it, each copy moved back by whole days (a longer history before the same data);
- `shifted`: every timestamp (and window and label) 5 h 30 min later (another time
  zone: the daily routine is judged by UTC hours);
- `mean3`, `mean12`: the mean of every three (twelve) rows, stamped with the first's
  time, as a coarser collector would report; window edges and labels move to the
  bucket they fall in.
The windows and labels are copied as they are, except for `meanK`.
Then score it as the original:

    perfpilot replay DST --labels DST/windows.json
"""
import csv
import datetime as dt
import json
import pathlib
import random
import shutil
import sys


def in_windows(ts, windows):
    return any(a[:19] <= ts[:19] <= b[:19] for a, b in windows)


def bucket_starts(rows, k):
    return [rows[i][0] for i in range(0, len(rows), k)]


def snap(ts, starts):
    """The start of the bucket `ts` falls in, formatted as NAB's windows are."""
    best = starts[0]
    for s in starts:
        if s[:19] <= ts[:19]:
            best = s
    return best[:19] + ".000000"


SHIFT = dt.timedelta(hours=5, minutes=30)


def shifted(ts):
    """`ts` (NAB's format, with or without fractional seconds) moved by SHIFT."""
    moved = dt.datetime.strptime(ts[:19], "%Y-%m-%d %H:%M:%S") + SHIFT
    return moved.strftime("%Y-%m-%d %H:%M:%S") + ts[19:]


def transform(rows, windows, mode, rng):
    values = [float(v) for _, v in rows]
    span = max(values) - min(values) if values else 0.0
    if mode == "scaled":
        return [(t, repr(float(v) * 1000)) for t, v in rows]
    if mode == "jittered":
        return [(t, repr(float(v) + rng.gauss(0.0, 0.005 * span))) for t, v in rows]
    if mode == "mirrored":
        top = max(values) + min(values)
        return [(t, repr(top - float(v))) for t, v in rows]
    if mode == "moved":
        return [(t, repr(float(v) + 1000 * span)) for t, v in rows]
    if mode == "shifted":
        return [(shifted(t), v) for t, v in rows]
    if mode == "paused":
        start = len(rows) * 15 // 100
        return [
            r
            for i, r in enumerate(rows)
            if not start <= i < start + 288 or in_windows(r[0], windows)
        ]
    if mode == "longer":
        head = rows[: len(rows) * 15 // 100]
        fmt = "%Y-%m-%d %H:%M:%S"
        first = dt.datetime.strptime(rows[0][0][:19], fmt)
        last = dt.datetime.strptime(head[-1][0][:19], fmt)
        days = dt.timedelta(days=(last - first).days + 1)
        out = []
        for k in range(4, 0, -1):
            out += [((dt.datetime.strptime(t[:19], fmt) - k * days).strftime(fmt), v) for t, v in head]
        return out + rows
    if mode == "thinned":
        return [r for r in rows if in_windows(r[0], windows) or rng.random() > 0.2]
    if mode == "gappy":
        out, i = [], 0
        while i < len(rows):
            if rng.random() < 0.003:
                j = i + rng.randint(12, 72)
                out += [r for r in rows[i:j] if in_windows(r[0], windows)]
                i = j
                continue
            out.append(rows[i])
            i += 1
        return out
    if mode.startswith("mean") and mode[4:].isdigit():
        k = int(mode[4:])
        out = []
        for i in range(0, len(rows), k):
            chunk = [float(v) for _, v in rows[i : i + k]]
            out.append((rows[i][0], repr(sum(chunk) / len(chunk))))
        return out
    if mode.startswith("every") and mode[5:].isdigit():
        k = int(mode[5:])
        edges = {e[:19] for w in windows for e in w}
        return [r for i, r in enumerate(rows) if i % k == 0 or r[0][:19] in edges]
    sys.exit(f"unknown mode {mode!r}: scaled, moved, jittered, mirrored, paused, longer, shifted, thinned, gappy, everyK or meanK")


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    src, dst, mode = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) == 5 else 7)
    windows = json.loads((src / "windows.json").read_text())
    labels = json.loads((src / "labels.json").read_text())
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*.csv")):
        rel = path.relative_to(src)
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = [(r[0], r[1]) for r in reader if r]
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(transform(rows, windows.get(str(rel), []), mode, rng))
        if mode == "shifted":
            key = str(rel)
            windows[key] = [[shifted(a), shifted(b)] for a, b in windows.get(key, [])]
            labels[key] = [shifted(t) for t in labels.get(key, [])]
        if mode.startswith("mean"):
            starts = bucket_starts(rows, int(mode[4:]))
            key = str(rel)
            windows[key] = [[snap(a, starts), snap(b, starts)] for a, b in windows.get(key, [])]
            labels[key] = [snap(t, starts)[:19] for t in labels.get(key, [])]
    (dst / "windows.json").write_text(json.dumps(windows, indent=4))
    (dst / "labels.json").write_text(json.dumps(labels, indent=4))


if __name__ == "__main__":
    main()
