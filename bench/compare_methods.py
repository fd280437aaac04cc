#!/usr/bin/env python3
"""Trains Fashion-MNIST with each method at several worker counts and records
how accuracy develops against epochs and against bytes communicated.

    python3 bench/compare_methods.py --binary build/examples/train_fmnist/train_fmnist \
        --epochs 5 --workers 4 8 16 32 --out bench/results

Writes convergence_<backend>_<date>.json (every run's per-epoch records) and
two PNG plots beside it when matplotlib is importable. The claim to check is
DGS's: with 16-32 asynchronous workers, samomentum stays closer to dense than
gd and dgc at the same keep ratio. The summary printed at the end states what
was measured, whatever it shows.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

METHODS = ["dense", "gd", "dgc", "samomentum", "gmc"]


def run(binary, method, workers, args):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    # Momentum methods take steps of about lr / (1 - m): give them lr * (1 - m).
    lr = args.lr if method in ("dense", "gd") else args.lr * (1.0 - args.momentum)
    cmd = [binary, "--method", method, "--workers", str(workers), "--epochs", str(args.epochs),
           "--ratio", str(args.ratio), "--json", path, "--no-progress", "--seed", str(args.seed),
           "--lr", str(lr), "--momentum", str(args.momentum)]
    if args.backend:
        cmd += ["--backend", args.backend]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"{method} with {workers} workers failed (exit {done.returncode})")
    with open(path) as f:
        result = json.load(f)
    os.unlink(path)
    return result


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plot(runs, workers, stem):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not importable: no plots (apt-get install python3-matplotlib)")
        return []
    written = []
    for kind in ("epoch", "bytes"):
        fig, axes = plt.subplots(1, len(workers), figsize=(4.2 * len(workers), 3.6), sharey=True,
                                 squeeze=False)
        for ax, n in zip(axes[0], workers):
            for r in runs:
                if r["workers"] != n:
                    continue
                xs = ([e["epoch"] for e in r["epochs"]] if kind == "epoch" else
                      [(e["bytes_pushed"] + e["bytes_pulled"]) / 1e6 for e in r["epochs"]])
                ys = [100.0 * e["test_accuracy"] for e in r["epochs"]]
                ax.plot(xs, ys, marker="o", label=r["method"])
            ax.set_title(f"{n} async workers")
            ax.set_xlabel("epoch" if kind == "epoch" else "MB pushed + pulled")
            if kind == "bytes":
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("test accuracy (%)")
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        path = f"{stem}_accuracy_vs_{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="build/examples/train_fmnist/train_fmnist")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--ratio", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=0.1, help="dense and gd; momentum methods get lr * (1 - m)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", default="")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    runs = [run(args.binary, m, n, args) for n in args.workers for m in args.methods]
    os.makedirs(args.out, exist_ok=True)
    backend = runs[0]["backend"]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    stem = os.path.join(args.out, f"convergence_{backend}_{date}_lr{args.lr:g}")
    record = {"date": date, "commit": commit(), "backend": backend, "device": runs[0]["device"],
              "model": runs[0]["model"], "epochs": args.epochs, "ratio": args.ratio, "lr": args.lr,
              "momentum": args.momentum,
              "workers": args.workers, "methods": args.methods, "runs": runs}
    with open(stem + ".json", "w") as f:
        json.dump(record, f, indent=1)
    plots = plot(runs, args.workers, stem)

    print("\nfinal test accuracy (%) after", args.epochs, "epochs, ratio", args.ratio, "on", runs[0]["device"])
    print("workers " + "".join(f"{m:>12}" for m in args.methods))
    final = {}
    for n in args.workers:
        row = []
        for m in args.methods:
            r = next(r for r in runs if r["workers"] == n and r["method"] == m)
            final[(m, n)] = 100.0 * r["epochs"][-1]["test_accuracy"]
            row.append(f"{final[(m, n)]:12.2f}")
        print(f"{n:7d} " + "".join(row))
    if all(m in args.methods for m in ("dense", "gd", "dgc", "samomentum")):
        for n in args.workers:
            acc = {m: final[(m, n)] for m in ("dense", "gd", "dgc", "samomentum")}
            if acc["dense"] < 20.0:
                verdict = (f"dense diverged ({acc['dense']:.1f}%); samomentum {acc['samomentum']:.2f} vs "
                           f"gd {acc['gd']:.2f}, dgc {acc['dgc']:.2f}")
            else:
                gaps = {m: abs(acc["dense"] - acc[m]) for m in ("gd", "dgc", "samomentum")}
                closest = min(gaps, key=gaps.get)
                verdict = (f"|gap to dense| gd {gaps['gd']:.2f}, dgc {gaps['dgc']:.2f}, samomentum "
                           f"{gaps['samomentum']:.2f}: {closest} is the closest")
            print(f"{n} workers: {verdict}")
    print("wrote", stem + ".json", *plots)


if __name__ == "__main__":
    main()
