#!/usr/bin/env python3
"""PyTorch baselines of the worker step, timed on the GPU in the same run as
dgs_bench_gpu (run both from bench/run_gpu.sh):

  reference  the step as the DGS authors' code computes it: momentum update,
             then per tensor the k-th value of |u| by torch.kthvalue, a mask,
             a multiply and a copy of the sparse update;
  topk       a modern step: the same update, then torch.topk of |u| per tensor
             and a gather of the selected values.

Both keep the same ratio per tensor as dgs (k = max(1, floor(ratio * n))).
Times are CUDA-event medians over --repeats runs after --warmup runs.

    python3 bench/torch_baseline.py --shape resnet50 --p 100000000 --ratio 0.01 --out torch.json
"""
import argparse
import datetime
import json
import math
import os

import torch


def tensor_sizes(shapes_dir, shape, p):
    if shape == "flat":
        return [p]
    base = []
    with open(os.path.join(shapes_dir, f"{shape}_tensors.tsv")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                base.append(int(line.split()[1]))
    sizes, total, i = [], 0, 0
    while total < p:
        n = min(base[i % len(base)], p - total)
        sizes.append(n)
        total += n
        i += 1
    return sizes


def time_it(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1000.0)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=os.path.join(os.path.dirname(__file__), "shapes"))
    p.add_argument("--shape", default="resnet50")
    p.add_argument("--p", type=int, default=100_000_000)
    p.add_argument("--ratio", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default="torch_baseline.json")
    args = p.parse_args()

    dev = torch.device("cuda")
    sizes = tensor_sizes(args.shapes, args.shape, args.p)
    g = torch.randn(args.p, device=dev)
    u = torch.randn(args.p, device=dev)
    lr, m = 0.01, 0.9
    views = list(torch.split(u, sizes))
    grads = list(torch.split(g, sizes))
    ks = [max(1, math.floor(args.ratio * n)) for n in sizes]
    sparse = torch.empty_like(u)
    sparse_views = list(torch.split(sparse, sizes))

    def reference():
        u.mul_(m).add_(g, alpha=lr)
        for t, s, n, k in zip(views, sparse_views, sizes, ks):
            threshold = t.abs().kthvalue(n - k + 1).values
            mask = t.abs() >= threshold
            s.copy_(t * mask)

    def topk():
        u.mul_(m).add_(g, alpha=lr)
        out = []
        for t, k in zip(views, ks):
            idx = torch.topk(t.abs(), k, sorted=False).indices
            out.append((idx, t[idx]))
        return out

    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "device": torch.cuda.get_device_name(),
               "torch": torch.__version__, "shape": args.shape, "p": args.p, "ratio": args.ratio,
               "segments": len(sizes), "repeats": args.repeats}
    results["reference_kthvalue_s"] = time_it(reference, args.warmup, args.repeats)
    results["topk_s"] = time_it(topk, args.warmup, args.repeats)
    del grads
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
