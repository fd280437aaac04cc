#!/usr/bin/env python3
"""Turns dgs_bench_gpu's JSON (and the PyTorch baselines') into the markdown
table of bench/README.md and checks the targets of the kernels issue.

    python3 bench/summarize.py gpu_bench.json torch_resnet50.json ...
"""
import json
import re
import sys


def medians(path):
    data = json.load(open(path))
    rows = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median" or "error_occurred" in b:
            continue
        name = re.sub(r"/(manual|real)_time$", "", b["run_name"])
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
        rows[name] = dict(b, seconds=b["real_time"] * scale)
    return data.get("context", {}), rows


def main():
    context, rows = medians(sys.argv[1])
    torch = [json.load(open(p)) for p in sys.argv[2:]]
    print(f"Device: {context.get('device', '?')}, measured copy bandwidth "
          f"{float(context.get('copy_bandwidth_GBps', 0)):.0f} GB/s (read + write), {context.get('date', '')}\n")
    print("| benchmark | P | ratio | time (ms) | GB/s counted | × byte floor | CUB baseline (ms) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in sorted(rows.items()):
        if not name.startswith(("worker_step", "server_push")):
            continue
        parts = name.split("/")
        p = int(float(r.get("P", 0)))
        ratio = next((x.split("=")[1] for x in parts if x.startswith("ratio=")), "")
        floor = r["seconds"] / r["floor_s"] if r.get("floor_s") else float("nan")
        cub = rows.get(name.replace("worker_step", "cub_baseline"))
        cub_ms = f"{cub['seconds'] * 1e3:.3f}" if cub else ""
        speed = f"{cub['seconds'] / r['seconds']:.1f}×" if cub else ""
        print(f"| {'/'.join(x for x in parts if not x.startswith(('P=', 'ratio=')))} | {p:.0e} | {ratio} | "
              f"{r['seconds'] * 1e3:.3f} | {r['bytes_per_iter'] / r['seconds'] / 1e9:.0f} | {floor:.2f} | {cub_ms} | {speed} |")
    target = rows.get("worker_step/samomentum/resnet50/P=100000000/ratio=0.010")
    server = rows.get("server_push/resnet50/P=100000000/ratio=0.010")
    print("\nTargets (P = 1e8, ResNet-50 segments, ratio 1%):")
    if target:
        f = target["seconds"] / target["floor_s"]
        print(f"- worker samomentum step {target['seconds'] * 1e3:.3f} ms = {f:.2f}× its byte floor "
              f"(target ≤ 1.25): {'met' if f <= 1.25 else 'NOT met'}")
        for t in torch:
            if t["shape"] == "resnet50" and t["p"] == 100_000_000:
                ref = t["reference_kthvalue_s"] / target["seconds"]
                top = t["topk_s"] / target["seconds"]
                print(f"- vs the reference PyTorch step ({t['reference_kthvalue_s'] * 1e3:.1f} ms): {ref:.1f}× "
                      f"(target ≥ 20): {'met' if ref >= 20 else 'NOT met'}")
                print(f"- vs the torch.topk step ({t['topk_s'] * 1e3:.1f} ms): {top:.1f}× "
                      f"(target ≥ 3): {'met' if top >= 3 else 'NOT met'}")
    if server:
        f = server["seconds"] / server["floor_s"]
        print(f"- server push {server['seconds'] * 1e3:.3f} ms = {f:.2f}× its byte floor (target ≤ 1.3): "
              f"{'met' if f <= 1.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
