#!/usr/bin/env python3
"""Turns dgs_bench_gpu's JSON (one or more runs) and the PyTorch baselines'
JSON into the markdown table of bench/README.md and checks the targets of the
kernels issue.

    python3 bench/summarize.py gpu_bench.json [more_gpu_bench.json ...] torch_resnet50.json ...

A benchmark file cut short (a run stopped at its time limit) is read up to
its last complete benchmark.
"""
import json
import os
import re
import sys


def load_benchmark_file(path):
    text = open(path).read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # Keep every complete benchmark object; close the arrays ourselves.
        cut = text.rfind("\n    }")
        if cut < 0:
            raise
        return json.loads(text[: cut + len("\n    }")] + "\n  ]\n}\n")


def clean_name(run_name):
    parts = [p for p in run_name.split("/") if not re.match(r"(min_time|repeats|manual_time|real_time)", p)]
    return "/".join(parts)


def medians(paths):
    context, rows = {}, {}
    for path in paths:
        data = load_benchmark_file(path)
        context = context or data.get("context", {})
        for b in data["benchmarks"]:
            if b.get("aggregate_name") != "median" or "error_occurred" in b:
                continue
            scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
            rows[clean_name(b["run_name"])] = dict(b, seconds=b["real_time"] * scale)
    return context, rows


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) >= 2 else 2
    bench_paths, torch = [], []
    for path in sys.argv[1:]:
        if not os.path.isfile(path):
            sys.exit(f"summarize.py: no such file: {path}")
        try:
            data = json.load(open(path))
        except json.JSONDecodeError:
            data = None  # a benchmark run cut short
        if isinstance(data, dict) and "reference_kthvalue_s" in data:
            torch.append(data)
        else:
            bench_paths.append(path)
    context, rows = medians(bench_paths)
    copy = rows.get("copy_bandwidth/1GiB")
    print(f"Device: {context.get('device', '?')}; device-to-device copy {float(context.get('copy_bandwidth_GBps', 0)):.0f} GB/s "
          f"(read + write, measured in the same run); {context.get('date', '')}\n")
    # captured: the share of large segments whose selection read the histogram
    # pass's capture instead of the data a second time (kernels/select.cuh);
    # in brackets the share histogrammed again because too few reached the guess.
    print("| benchmark | shape | segments | P | ratio | time (ms) | GB/s counted | × byte floor | captured | CUB baseline (ms) | CUB / dgs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def order(item):
        name, r = item
        parts = name.split("/")
        return (parts[0], parts[1] if parts[0] == "worker_step" else "", float(r.get("P", 0)), name)

    for name, r in sorted(rows.items(), key=order):
        if not name.startswith(("worker_step", "server_push")):
            continue
        parts = name.split("/")
        ratio = next((x.split("=")[1] for x in parts if x.startswith("ratio=")), "")
        label = "/".join(x for x in parts if not x.startswith(("P=", "ratio=")))
        kind, shape = ("/".join(label.split("/")[:-1]), label.split("/")[-1])
        floor = r["seconds"] / r["floor_s"] if r.get("floor_s") else float("nan")
        cub = rows.get(name.replace("worker_step", "cub_baseline")) if name.startswith("worker_step/samomentum") else None
        cub_ms = f"{cub['seconds'] * 1e3:.2f}" if cub else ""
        speed = f"{cub['seconds'] / r['seconds']:.1f}×" if cub else ""
        segments = f"{int(r['segments'])}" if "segments" in r else ""
        captured = f"{100 * r['captured']:.0f}%" if "captured" in r else ""
        if r.get("missed"):
            captured += f" ({100 * r['missed']:.0f}% again)"
        print(f"| {kind} | {shape} | {segments} | {float(r.get('P', 0)):.1e} | {ratio} | {r['seconds'] * 1e3:.3f} | "
              f"{r['bytes_per_iter'] / r['seconds'] / 1e9:.0f} | {floor:.2f} | {captured} | {cub_ms} | {speed} |")
    if copy:
        print(f"\ncopy_bandwidth/1GiB benchmark: {copy['seconds'] * 1e3:.3f} ms per GiB copied")
    target = rows.get("worker_step/samomentum/resnet50/P=100000000/ratio=0.010")
    server = rows.get("server_push/resnet50/P=100000000/ratio=0.010")
    print("\nTargets (P = 1e8, ResNet-50 segments, ratio 1%):")
    if target:
        f = target["seconds"] / target["floor_s"]
        print(f"- worker samomentum step {target['seconds'] * 1e3:.3f} ms = {f:.2f}× its byte floor of "
              f"{target['floor_s'] * 1e3:.3f} ms (target ≤ 1.25): {'met' if f <= 1.25 else 'NOT met'}")
        for t in torch:
            if t["shape"] == "resnet50" and t["p"] == 100_000_000:
                ref = t["reference_kthvalue_s"] / target["seconds"]
                top = t["topk_s"] / target["seconds"]
                print(f"- vs the reference PyTorch step ({t['reference_kthvalue_s'] * 1e3:.1f} ms): {ref:.1f}× faster "
                      f"(target ≥ 20): {'met' if ref >= 20 else 'NOT met'}")
                print(f"- vs the torch.topk step ({t['topk_s'] * 1e3:.1f} ms): {top:.1f}× faster "
                      f"(target ≥ 3): {'met' if top >= 3 else 'NOT met'}")
    if server:
        f = server["seconds"] / server["floor_s"]
        print(f"- server push {server['seconds'] * 1e3:.3f} ms = {f:.2f}× its byte floor of {server['floor_s'] * 1e3:.3f} ms "
              f"(target ≤ 1.3): {'met' if f <= 1.3 else 'NOT met'}")
    # Sync rounds: the per-tile sums against the accumulator round, same run.
    rounds = sorted((n, r) for n, r in rows.items() if n.startswith("sync_round/tiles/"))
    if rounds:
        print("\nSync rounds (server apply_round; the accumulator round it replaced, same run):")
    for name, r in rounds:
        base = rows.get(name.replace("sync_round/tiles/", "sync_round/accumulator/"))
        workers = next((x.split("=")[1] for x in name.split("/") if x.startswith("workers=")), "?")
        line = (f"- {workers} workers, {name.split('/')[3]}, P = {float(r.get('P', 0)):.0e}: "
                f"{r['seconds'] * 1e3:.3f} ms = {r['seconds'] / r['floor_s']:.2f}× its byte floor")
        if base:
            line += f"; accumulator round {base['seconds'] * 1e3:.3f} ms ({base['seconds'] / r['seconds']:.1f}× slower)"
        print(line)
    for t in torch:
        print(f"\nPyTorch baselines, {t['shape']} (P = {t['p']:.0e}, {t['segments']} tensors, ratio {t['ratio']}): "
              f"reference (kthvalue) {t['reference_kthvalue_s'] * 1e3:.1f} ms, torch.topk {t['topk_s'] * 1e3:.2f} ms "
              f"({t['device']}, torch {t['torch']}, median of {t['repeats']})")


if __name__ == "__main__":
    sys.exit(main())
