#!/usr/bin/env python3
"""Mutation testing of the kernels and their host twins, without a GPU.

Each mutant of tests/mutation/mutants.txt changes one line of one source
file the way a real bug would (a wrong rounding, an off-by-one, a swapped
operand, a missing clear). This script builds each mutant in a mirror of the
working tree and runs the suite that should notice it: `emulated` (the cuda
backend's tests on the CPU emulation of CUDA, which compare every kernel with
its host twin), `host` (dgs_tests: the host backend, the runtime, the
in-process transport and the bootstrap's choices, exact expected values) or
`net` (ctest's net.*: the MPI transport, a job over MPI and the bootstraps,
several processes each). A mutant the tests still pass is a survivor: either the
change does not alter behaviour (say why in the list, and drop it) or the
tests miss a bug of that kind.

The mirror (build-mutants/src, the files git tracks or would track, copied
only when they differ, so builds stay incremental) and its build directory
(build-mutants/build) are separate from build/, so the working tree is never
mutated. The first run configures and builds both test programs (several
minutes); later runs rebuild what a mutant touches (about half a minute for
one kernel source).

    tests/mutation/run_mutants.py                 # every mutant
    tests/mutation/run_mutants.py --only 'reply'  # names matching a regex
    tests/mutation/run_mutants.py --list          # names, files, suites

Exit status: 0 when every mutant was killed, 1 when any survived, 2 when the
unmutated tree fails its suites or a mutant no longer applies (its line
changed: update the list).
"""

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The cuda backend's tests that a kernel change touches, without the every-
# method test (four to five minutes on the emulation; a mutant may name it).
EMULATED_FILTER = ("Backend/*.*/cuda:CudaBackend*:Async*:"
                   "-*EveryMethodAndCompressor*")
SUITES = ("emulated", "host", "net")
# The multi-process tests (ctest's net.*: the MPI transport, the MPI job,
# the bootstraps) and the programs they run.
NET_TARGETS = ["dgs_mpi_transport_check", "dgs_mpi_job", "dgs_bootstrap_check"]


class Mutant:
    def __init__(self, name, line):
        self.name = name
        self.line = line  # in mutants.txt
        self.file = None
        self.suite = None
        self.why = ""
        self.env = {}
        self.filter = None
        self.old = None
        self.new = None

    def check(self):
        missing = [k for k in ("file", "suite", "old", "new")
                   if getattr(self, k) is None]
        if missing:
            raise SystemExit(f"mutants.txt:{self.line}: {self.name} lacks "
                             + ", ".join(missing))
        if self.suite not in SUITES:
            raise SystemExit(f"mutants.txt:{self.line}: {self.name}: suite "
                             f"'{self.suite}' is not one of {', '.join(SUITES)}")
        if self.old == self.new:
            raise SystemExit(f"mutants.txt:{self.line}: {self.name} changes nothing")


def parse(path):
    """mutants.txt: blocks that start with '== name', then 'key: value'
    lines (file, suite, why, env NAME=VALUE, filter), the line to change
    as '- text' and its replacement as '+ text' (a bare '+' deletes it).
    The text is a substring of one line, found exactly once in the file."""
    mutants = []
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("== "):
            if current:
                current.check()
            current = Mutant(line[3:].strip(), number)
            mutants.append(current)
            continue
        if current is None:
            raise SystemExit(f"mutants.txt:{number}: text before the first '== name'")
        if line.startswith("- "):
            current.old = line[2:]
        elif line == "+" or line.startswith("+ "):
            current.new = line[2:]
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise SystemExit(f"mutants.txt:{number}: expected 'key: value', '- ' or '+ '")
            key, value = key.strip(), value.strip()
            if key == "file":
                current.file = value
            elif key == "suite":
                current.suite = value
            elif key == "why":
                current.why = (current.why + " " + value).strip()
            elif key == "env":
                name, eq, setting = value.partition("=")
                if not eq:
                    raise SystemExit(f"mutants.txt:{number}: env wants NAME=VALUE")
                current.env[name] = setting
            elif key == "filter":
                current.filter = value
            else:
                raise SystemExit(f"mutants.txt:{number}: unknown key '{key}'")
    if current:
        current.check()
    names = [m.name for m in mutants]
    twice = {n for n in names if names.count(n) > 1}
    if twice:
        raise SystemExit("mutants.txt: names used twice: " + ", ".join(sorted(twice)))
    return mutants


def run(cmd, cwd=None, env=None, timeout=None, log=None):
    """Runs cmd; returns (exit status or 'timeout', seconds, its output)."""
    start = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        status, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        status = "timeout"
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    if log is not None:
        log.write(out)
        log.flush()
    return status, time.monotonic() - start, out


def mirror(src):
    """Copies the files git tracks or would track into src, each only when
    its bytes differ, and removes what is no longer among them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout.decode().split("\0")
    files = {f for f in listed if f and (ROOT / f).is_file()}
    copied = 0
    for f in sorted(files):
        to = src / f
        if to.is_file() and filecmp.cmp(ROOT / f, to, shallow=False):
            continue
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, to)
        copied += 1
    for path in sorted(src.rglob("*"), reverse=True):
        rel = path.relative_to(src).as_posix()
        if path.is_file() and rel not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return copied


def targets_of(suite):
    if suite == "net":
        return NET_TARGETS
    return ["dgs_emulated_tests" if suite == "emulated" else "dgs_tests"]


def test_command(build, suite, gtest_filter=None):
    """The suite's test program; an emulated suite runs `gtest_filter`
    (EMULATED_FILTER when None)."""
    if suite == "net":
        return ["ctest", "--test-dir", str(build), "-R", "^net\\.", "--stop-on-failure",
                "--output-on-failure"]
    flags = ["--gtest_brief=1", "--gtest_fail_fast"]
    if suite == "emulated":
        program = build / "tests" / "emulation" / "dgs_emulated_tests"
        return [str(program), f"--gtest_filter={gtest_filter or EMULATED_FILTER}"] + flags
    return [str(build / "tests" / "dgs_tests")] + flags


def first_failure(status, out):
    """The first failed test, an uncaught exception, or how the process died
    (brief output names no running test)."""
    m = re.search(r"^\[  FAILED  \] ([A-Za-z_]\S*)", out, re.M)
    if m:
        return m.group(1).rstrip(",")
    m = re.search(r"^\s*\d+ - (net\.\S+)", out, re.M)  # ctest's list of failures
    if m:
        return m.group(1)
    m = re.search(r"(terminate called[^\n]*)", out)
    if m:
        return m.group(1)[:120]
    return f"signal {-status}" if isinstance(status, int) and status < 0 else f"exit {status}"


def not_applying(mutants, root):
    """The mutants whose text is not found exactly once in their file under
    root, each reported on stderr."""
    bad = []
    for m in mutants:
        path = root / m.file
        hits = path.read_text().count(m.old) if path.is_file() else 0
        if hits != 1:
            print(f"mutant {m.name} (tests/mutation/mutants.txt:{m.line}): its line is found "
                  f"{hits} times in {m.file}, not once; update the mutant to the code",
                  file=sys.stderr)
            bad.append(m)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the mutants and stop")
    ap.add_argument("--check", action="store_true",
                    help="check that every mutant applies to the working tree, and stop")
    ap.add_argument("--only", help="run the mutants whose name matches this regex")
    ap.add_argument("--mutants", default=str(ROOT / "tests" / "mutation" / "mutants.txt"))
    ap.add_argument("--dir", default=str(ROOT / "build-mutants"),
                    help="holds the mirror (src/) and its build (build/)")
    ap.add_argument("--jobs", type=int, default=2, help="build jobs")
    ap.add_argument("--timeout", type=int, default=900,
                    help="seconds a mutant's tests may run (past it: killed, by a hang)")
    ap.add_argument("--full", action="store_true",
                    help="emulated mutants run every emulated test, the every-method "
                         "test too (4 to 5 more minutes each; what ctest runs)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    mutants = parse(Path(args.mutants))
    if args.only:
        mutants = [m for m in mutants if re.search(args.only, m.name)]
        if not mutants:
            raise SystemExit(f"no mutant matches '{args.only}'")
    if args.list:
        for m in mutants:
            print(f"{m.name:44} {m.suite:9} {m.file}")
        return 0

    if args.check:
        bad = not_applying(mutants, ROOT)
        print(f"{len(mutants) - len(bad)} of {len(mutants)} mutants apply")
        return 2 if bad else 0

    base = Path(args.dir)
    src, build = base / "src", base / "build"
    src.mkdir(parents=True, exist_ok=True)
    copied = mirror(src)
    print(f"mirror: {copied} files copied into {src}", flush=True)

    # Every mutant must still apply, before anything is built.
    if not_applying(mutants, src):
        return 2

    env = dict(os.environ)
    cuda_bin = "/usr/local/cuda/bin"
    if os.path.isdir(cuda_bin) and cuda_bin not in env.get("PATH", ""):
        env["PATH"] = cuda_bin + ":" + env.get("PATH", "")
    log_path = base / "log.txt"
    log = open(log_path, "w")
    print(f"full output: {log_path}", flush=True)

    cache = build / "CMakeCache.txt"
    # MPI on for the net suite (a mirror configured before it had MPI off).
    if not cache.exists() or "DGS_WITH_MPI:BOOL=ON" not in cache.read_text():
        print("configuring the mirror's build (once)", flush=True)
        status, _, out = run(["cmake", "-S", str(src), "-B", str(build),
                              "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CUDA_ARCHITECTURES=90",
                              "-DDGS_BUILD_TESTS=ON", "-DDGS_CUDA_EMULATION=ON",
                              "-DDGS_BUILD_EXAMPLES=OFF", "-DDGS_BUILD_BENCH=OFF",
                              "-DDGS_WITH_MPI=ON", "-DDGS_WITH_NCCL=OFF"], env=env, log=log)
        if status != 0:
            print(out[-4000:], file=sys.stderr)
            return 2

    def build_target(suite):
        return run(["cmake", "--build", str(build), "--target", *targets_of(suite),
                    "-j", str(args.jobs)], env=env, log=log)

    suites = sorted({m.suite for m in mutants})
    for suite in suites:
        print(f"building and running the unmutated {suite} suite ...", flush=True)
        status, secs, out = build_target(suite)
        if status != 0:
            print(out[-4000:], file=sys.stderr)
            print(f"the unmutated tree does not build ({', '.join(targets_of(suite))})",
                  file=sys.stderr)
            return 2
        run_env = dict(env, DGS_EMU_ORDER="forward")
        status, secs, out = run(test_command(build, suite, "*" if args.full else None),
                                env=run_env,
                                timeout=args.timeout, log=log)
        if status != 0:
            print(out[-4000:], file=sys.stderr)
            print(f"the unmutated {suite} suite fails; fix that first", file=sys.stderr)
            return 2
        print(f"  passes ({secs:.0f} s)", flush=True)

    results = []
    for n, m in enumerate(mutants, 1):
        path = src / m.file
        original = path.read_text()
        result = {"name": m.name, "file": m.file, "suite": m.suite, "why": m.why}
        print(f"[{n}/{len(mutants)}] {m.name} ({m.file}, {m.suite}) ...", end=" ", flush=True)
        log.write(f"\n===== mutant {m.name}\n")
        try:
            path.write_text(original.replace(m.old, m.new, 1))
            status, _, out = build_target(m.suite)
            if status != 0:
                result.update(outcome="does not build", detail=out[-300:])
            else:
                run_env = dict(env, DGS_EMU_ORDER="forward", **m.env)
                status, secs, out = run(test_command(build, m.suite,
                                                     "*" if args.full else m.filter),
                                        env=run_env,
                                        timeout=args.timeout, log=log)
                result["test_seconds"] = round(secs, 1)
                if status == 0:
                    result.update(outcome="SURVIVED", detail="")
                elif status == "timeout":
                    result.update(outcome="killed", detail=f"hangs (past {args.timeout} s)")
                else:
                    result.update(outcome="killed", detail=first_failure(status, out))
        finally:
            path.write_text(original)
        results.append(result)
        print(f"{result['outcome']}"
              + (f" ({result['detail']})" if result.get("detail") and
                 result["outcome"] != "does not build" else "")
              + (f", {result['test_seconds']:.0f} s" if "test_seconds" in result else ""),
              flush=True)
        if result["outcome"] == "does not build":
            print(result["detail"], file=sys.stderr)
    # Leave the mirror's build matching the unmutated tree.
    for suite in suites:
        build_target(suite)
    log.close()

    killed = sum(r["outcome"] == "killed" for r in results)
    survived = [r for r in results if r["outcome"] == "SURVIVED"]
    broken = [r for r in results if r["outcome"] == "does not build"]
    print(f"\n{killed} of {len(results)} mutants killed, {len(survived)} survived"
          + (f", {len(broken)} do not build" if broken else ""))
    for r in survived:
        print(f"  survived: {r['name']} ({r['file']}): {r['why']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if broken:
        return 2
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
