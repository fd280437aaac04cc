#!/usr/bin/env python3
"""Turns the CSV of an Nsight Compute run (ncu --csv --page raw --metrics
gpu__time_duration.sum,dram__bytes.sum,launch__grid_size ...) into a table of
kernels: time, DRAM bytes and grid of each launch, in launch order, and the
totals per kernel name. bench/run_gpu.sh profile writes such CSVs.

    python3 bench/ncu_table.py ncu_worker_step.csv
"""
import csv
import re
import sys
from collections import OrderedDict

TIME = "gpu__time_duration.sum"
BYTES = "dram__bytes.sum"
GRID = "launch__grid_size"


def number(text):
    try:
        return float(text.replace(",", ""))
    except (AttributeError, ValueError):
        return None


def short_name(name):
    """The kernel's own name, without namespaces, template arguments or parameters."""
    name = name.replace("(anonymous namespace)::", "")
    name = re.sub(r"[(<].*$", "", name)
    return name.split("::")[-1].split(" ")[-1]


def read(path):
    rows = list(csv.reader(open(path, newline="")))
    header_at = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if header_at is None:
        raise SystemExit(f"{path}: no ncu CSV header (is ncu there, and did it profile anything?)")
    header = rows[header_at]
    col = {name: header.index(name) for name in header}
    scale_time, scale_bytes = 1e-3, 1e-6  # ncu's default units: nanoseconds, bytes
    launches = []
    for r in rows[header_at + 1:]:
        if len(r) != len(header):
            continue
        if not r[col["ID"]].strip():  # the units row
            units = {name: r[i] for name, i in col.items()}
            scale_time = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(units.get(TIME), 1e-3)
            scale_bytes = {"byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1.0, "Gbyte": 1e3}.get(
                units.get(BYTES), 1e-6)
            continue
        t = number(r[col[TIME]]) if TIME in col else None
        b = number(r[col[BYTES]]) if BYTES in col else None
        g = number(r[col[GRID]]) if GRID in col else None
        launches.append({
            "kernel": short_name(r[col["Kernel Name"]]),
            "us": None if t is None else round(t * scale_time, 2),
            "dram_MB": None if b is None else round(b * scale_bytes, 2),
            "grid": None if g is None else int(g),
        })
    return launches


def main():
    args = sys.argv[1:]
    if len(args) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    launches = read(args[0])
    print("| # | kernel | grid | µs | DRAM MB |")
    print("|---:|---|---:|---:|---:|")
    for i, k in enumerate(launches):
        print(f"| {i} | {k['kernel']} | {k['grid'] or ''} | {k['us'] if k['us'] is not None else ''} | "
              f"{k['dram_MB'] if k['dram_MB'] is not None else ''} |")
    totals = OrderedDict()
    for k in launches:
        t = totals.setdefault(k["kernel"], {"launches": 0, "us": 0.0, "dram_MB": 0.0})
        t["launches"] += 1
        t["us"] += k["us"] or 0.0
        t["dram_MB"] += k["dram_MB"] or 0.0
    print()
    print("| kernel | launches | µs | DRAM MB |")
    print("|---|---:|---:|---:|")
    for name, t in totals.items():
        print(f"| {name} | {t['launches']} | {t['us']:.1f} | {t['dram_MB']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
