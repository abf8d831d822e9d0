#!/usr/bin/env python
"""Benchmark: ``bertkit tokenize`` memory stays flat as the corpus grows, and --num-proc scales.

Builds corpora by concatenating a text file (default: ../shared enwiki_sample.txt, 17 MB) 1x, 16x
(266 MB) and 60x (~1 GB) in a temporary directory (deleted after), then runs
``bertkit tokenize --task mlm --max-seq-length 128 --tokenizer minilm-l6`` on each through the real
CLI, as a subprocess, at each ``--num-proc``.  Per run it prints the wall time, the input MB/s and
the peak RSS of the whole process tree (the sum of the resident sets of the command and all its
descendants, sampled every 50 ms from /proc, so worker processes count), next to ``ru_maxrss``
from ``wait4`` (the largest single process; what benchmarks/eval_memory.py reports), and then the
ratios the issue's targets are stated in:

* peak RSS at 16x / peak RSS at 1x (target <= 1.3), and the 60x peak (target <= 2 GB);
* MB/s at --num-proc 2 / MB/s at --num-proc 1 (target >= 1.6; today's 2.5 MB/s as the floor).

``--root DIR`` runs the bertkit source tree in DIR instead of this one (e.g. a worktree of an
older commit, for before/after figures).

    .venv/bin/python benchmarks/tokenize_scale.py                      # 1x,16x,60x at 1 and 2 procs
    .venv/bin/python benchmarks/tokenize_scale.py --sizes 1,16 --num-proc 2 --root ../wt-base
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _machine import cpu_name  # benchmarks/_machine.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pretrain" / "enwiki_sample.txt"


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (VmRSS summed)."""
    kids = _children()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def run_measured(cmd: list[str], env: dict, log: Path, cwd: Path | None = None) -> dict:
    """Run one command; return wall seconds, peak tree RSS and ru_maxrss (bytes).  Exits on failure."""
    peak = [0]
    done = threading.Event()
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                done.wait(0.05)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        th.join()
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); log {log}:\n{tail}")
    return {"wall": wall, "tree_rss": peak[0], "maxrss": usage.ru_maxrss * 1024}


def build_corpus(src: Path, times: int, dst: Path) -> int:
    """``src`` concatenated ``times`` times (a newline between copies, so documents stay apart)."""
    data = src.read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    with open(dst, "wb") as fh:
        for _ in range(times):
            fh.write(data)
            fh.write(b"\n")
    return dst.stat().st_size


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="the text to concatenate (default: ../shared enwiki_sample)")
    p.add_argument("--sizes", default="1,16,60", help="copies of --data per corpus, comma-separated")
    p.add_argument("--num-proc", default="1,2", help="--num-proc values to run, comma-separated")
    p.add_argument("--tokenizer", default="minilm-l6", help="tokenizer dir (default: the packaged MiniLM)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--root", default=str(ROOT), help="bertkit source tree to run (default: this one)")
    p.add_argument("--tmp", default=None, help="where to build the corpora (default: the system temp dir)")
    p.add_argument("--baseline-mbps", type=float, default=2.5, help="today's throughput, the floor (MB/s)")
    args = p.parse_args(argv)

    src = Path(args.data)
    if not src.is_file():
        raise SystemExit(f"--data {src}: no such file")
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    procs = [int(x) for x in args.num_proc.split(",") if x.strip()]
    root = Path(args.root).resolve()
    env = dict(os.environ, PYTHONPATH=str(root), TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1")
    env.pop("OMP_NUM_THREADS", None)
    git = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    print(f"# bertkit tokenize at scale — {cpu_name()}, {os.cpu_count()} cores; code {root} "
          f"({git.stdout.strip()[:70]}); load average {os.getloadavg()[0]:.1f} at start; {time.strftime('%F %T %Z')}",
          flush=True)
    results: dict[tuple[int, int], dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bertkit-tokscale-", dir=args.tmp))
    try:
        for times in sizes:
            corpus = tmp / f"corpus-x{times}.txt"
            nbytes = build_corpus(src, times, corpus)
            for n in procs:
                out = tmp / f"out-x{times}-p{n}"
                cmd = [sys.executable, "-m", "bertkit", "tokenize", str(corpus), "--output", str(out),
                       "--task", "mlm", "--tokenizer", args.tokenizer, "--max-seq-length", str(args.max_seq_length),
                       "--num-proc", str(n), "--overwrite"]
                # run from the code tree: `python -m` puts the working directory first on sys.path
                r = run_measured(cmd, env, tmp / f"log-x{times}-p{n}.txt", cwd=root)
                r["bytes"] = nbytes
                r["mbps"] = nbytes / 1e6 / r["wall"]
                log = (tmp / f"log-x{times}-p{n}.txt").read_text(encoding="utf-8", errors="replace")
                m = re.search(r"throughput\s+([\d.,]+) MB/s", log)
                r["reported"] = m.group(1) + " MB/s" if m else "-"
                results[(times, n)] = r
                print(f"x{times:<3d} {nbytes / 1e6:7.1f} MB  --num-proc {n}: {r['wall']:7.1f} s  {r['mbps']:5.2f} MB/s "
                      f"(summary: {r['reported']})  peak RSS tree {r['tree_rss'] / 2**30:5.2f} GiB, "
                      f"largest process {r['maxrss'] / 2**30:5.2f} GiB; load {os.getloadavg()[0]:.1f}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            corpus.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| corpus | --num-proc | wall s | MB/s | peak RSS (tree) | largest process |")
    print("|---|---:|---:|---:|---:|---:|")
    for (_times, n), r in results.items():
        print(f"| {r['bytes'] / 1e6:.0f} MB (x{times}) | {n} | {r['wall']:.1f} | {r['mbps']:.2f} | "
              f"{r['tree_rss'] / 2**30:.2f} GiB | {r['maxrss'] / 2**30:.2f} GiB |")
    print()
    small = min(sizes)
    for n in procs:
        for times in sizes:
            if times == small or (small, n) not in results or (times, n) not in results:
                continue
            ratio = results[(times, n)]["tree_rss"] / results[(small, n)]["tree_rss"]
            print(f"peak RSS x{times} / x{small} at --num-proc {n}: {ratio:.2f}"
                  + (" (target <= 1.3)" if times == 16 else ""))
    for (_times, n), r in results.items():
        if r["bytes"] >= 0.9e9:
            print(f"peak RSS, {r['bytes'] / 1e9:.2f} GB corpus at --num-proc {n}: {r['tree_rss'] / 2**30:.2f} GiB "
                  f"(target <= 2 GB): {'met' if r['tree_rss'] <= 2e9 else 'NOT met'}")
    if 1 in procs and 2 in procs:
        for times in sizes:
            if (times, 1) in results and (times, 2) in results:
                s = results[(times, 2)]["mbps"] / results[(times, 1)]["mbps"]
                print(f"MB/s --num-proc 2 / --num-proc 1 at x{times}: {s:.2f} (target >= 1.6); "
                      f"--num-proc 2 vs today's {args.baseline_mbps} MB/s: "
                      f"{results[(times, 2)]['mbps'] / args.baseline_mbps:.2f}x")


if __name__ == "__main__":
    main()
