#!/usr/bin/env python3
"""Compares the GPU runs of several commits made in one session
(scripts/build-gpu-ab.sh, then bench/run_ab.sh there, which runs
bench/run_gpu.sh with OUT=.../NAME per commit and prints this table too):
tests run and failed, and each benchmark's median time next to the first
directory's, with its spread over the repetitions (cv) and its multiple of
the byte floor; last, for the worker step and the server push, the fastest
build and the fastest whose tests passed (unpack the tests and bench
archives into the same folders for that). A build run twice (NAME and
NAME@2) shows the spread between runs: a smaller difference is noise.

    python3 bench/compare_ab.py OUT/main OUT/wip-fused-candidates ...

Each directory may hold tests.json (gtest), gpu_bench.json (dgs_bench_gpu)
and device.txt (device and commit). Missing parts are left blank.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import clean_name, load_benchmark_file, medians  # noqa: E402


def spreads(path):
    """Each benchmark's coefficient of variation over its repetitions (Google
    Benchmark's cv aggregate): a difference between builds below about twice
    it is noise."""
    out = {}
    try:
        data = load_benchmark_file(path)
    except (OSError, ValueError):
        return out
    for b in data.get("benchmarks", []):
        if b.get("aggregate_name") == "cv" and "error_occurred" not in b:
            out[clean_name(b["run_name"])] = b["real_time"]
    return out


def commit_of(directory):
    try:
        for line in open(os.path.join(directory, "device.txt")):
            if line.startswith("commit "):
                return line.split()[1][:7]
    except OSError:
        pass
    return "?"


def count_tests(path):
    """Tests run, skipped and failed in a gtest JSON report, and the failed names."""
    report = json.load(open(path))
    run = skipped = 0
    failures = []
    for suite in report.get("testsuites", []):
        for t in suite.get("testsuite", []):
            if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                skipped += 1
                continue
            run += 1
            if t.get("failures"):
                failures.append(f"{suite['name']}.{t['name']}")
    return run, skipped, len(failures), failures


def test_counts(directory):
    """The tests of a folder's tests.json in words, and whether they ran and passed."""
    path = os.path.join(directory, "tests.json")
    if not os.path.exists(path):
        return "", False
    try:
        run, skipped, failed, failures = count_tests(path)
    except json.JSONDecodeError:
        return "unreadable", False
    text = f"{run} run, {skipped} skipped, {failed} failed"
    return text + (" (" + ", ".join(failures) + ")" if failures else ""), run > 0 and failed == 0


def main():
    directories = sys.argv[1:]
    if not directories:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    names = [os.path.basename(os.path.normpath(d)) for d in directories]
    print("| commit | directory | tests |")
    print("|---|---|---|")
    passed = {}
    for d, name in zip(directories, names):
        text, passed[name] = test_counts(d)
        print(f"| {commit_of(d)} | {name} | {text} |")
    runs, cvs = [], []
    for d in directories:
        path = os.path.join(d, "gpu_bench.json")
        runs.append(medians([path])[1] if os.path.exists(path) else {})
        cvs.append(spreads(path) if os.path.exists(path) else {})
    benchmarks = sorted({
        b for r in runs for b in r
        if b.startswith(("worker_step", "server_push", "update_pass", "sync_round"))
    })
    if not benchmarks:
        return 0
    print()
    print("| benchmark | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for b in benchmarks:
        base = runs[0].get(b)
        cells = []
        for r, cv in zip(runs, cvs):
            row = r.get(b)
            if row is None:
                cells.append("")
                continue
            cell = f"{row['seconds'] * 1e3:.3f} ms"
            if b in cv:
                cell += f" (cv {cv[b]:.1%})"
            if row.get("floor_s"):
                cell += f", {row['seconds'] / row['floor_s']:.2f}× floor"
            if base is not None and row is not base:
                cell += f", {base['seconds'] / row['seconds']:.2f}× faster"
            if "pass0_from_list" in row:
                cell += f", list {row['pass0_from_list']:.0%}"
            cells.append(cell)
        print(f"| {b} | " + " | ".join(cells) + " |")
    # The candidates to land: the fastest build of each target benchmark, and
    # the fastest whose GPU tests ran and passed (tests.json in the same folder).
    print()
    for b in benchmarks:
        if not b.startswith(("worker_step/samomentum", "server_push")):
            continue
        timed = sorted((r[b]["seconds"], name) for r, name in zip(runs, names) if b in r)
        exact = [(t, name) for t, name in timed if passed[name]]
        fastest = f"{timed[0][1]} ({timed[0][0] * 1e3:.3f} ms)"
        best = f"{exact[0][1]} ({exact[0][0] * 1e3:.3f} ms)" if exact else "none"
        print(f"- {b}: fastest {fastest}; fastest with passing tests {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
