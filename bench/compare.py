"""Compare the inbound poll of two revisions: paired runs over the same mails, taking turns.

Run: `python bench/compare.py BASE [--against REV] [--pairs N]` with the test services' environment
loaded (`make bench-compare BASE=REV` does both). BASE and REV are git revisions; without --against
the other side is the checkout as it stands, uncommitted changes included.

Why: one machine's speed moves by up to 2x within minutes here, so a change of a few per cent
shows only when the two versions run close together, many times, by turns. `bench/inbound.py`
measures a revision against the bare loop; this measures one revision against another.

  mails     the mix of bench/inbound.py (~500), APPENDed once to a fresh folder before any timing.
  a run     a fresh process of one revision (a git worktree of it, or the checkout), importing
            that revision's `helpdesk`; the measuring code is this file's, the same for both.
            It polls the folder into a fresh database once to warm up (imports, first
            connections) and once measured, as bench/inbound.py's pipeline does, and reports the
            poll's seconds, its own CPU, its child processes' CPU and the whole machine's busy CPU.
  a pair    one run of each revision, the order alternating from pair to pair.

Both revisions use this checkout's virtualenv. Prints a markdown table: per pair, the seconds of
each side and their ratio; then medians, and how many pairs the other side won.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def busy_cpu_seconds() -> float:
    """Return the whole machine's busy CPU time since boot (all cores; idle and iowait left out)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


# --- one run, in a process of the revision under test ------------------------------------------

def run_once(root: Path, folder: str, bucket: str) -> dict:
    """Poll `folder` twice into fresh databases with the `helpdesk` under `root`; return the second poll's figures."""
    sys.path.insert(0, str(root))
    import helpdesk  # the revision's, imported first: bench/inbound.py then leaves sys.path alone

    if Path(helpdesk.__file__).resolve().parent.parent != root.resolve():
        raise SystemExit(f"imported helpdesk from {helpdesk.__file__}, not from {root}")
    import inbound  # this checkout's bench helpers (beside this file): the same setup on both sides
    figures = {}
    for _ in ("warm-up", "measured"):
        workdir = Path(tempfile.mkdtemp(prefix="hd-compare-"))
        database = inbound.Database(workdir)
        try:
            app, db = inbound.make_app(database.uri, workdir, bucket)
            with app.app_context():
                machine = busy_cpu_seconds()
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                result = inbound.pipeline(app, db, folder, None)
                helpers = resource.getrusage(resource.RUSAGE_CHILDREN)
                figures = {"seconds": round(result["seconds"], 4), "cpu_seconds": round(result["cpu_seconds"], 3),
                           "helper_cpu_seconds": round(helpers.ru_utime + helpers.ru_stime
                                                       - children.ru_utime - children.ru_stime, 3),
                           "machine_cpu_seconds": round(busy_cpu_seconds() - machine, 2),
                           "processed": result["processed"], "ok": result["ok"], "error": result["error"]}
                db.session.remove()
                db.engine.dispose()
            inbound._flush_bench_redis(app)
        finally:
            inbound._empty_bucket(bucket)
            database.drop()
            shutil.rmtree(workdir, ignore_errors=True)
        time.sleep(1)  # SeaweedFS removes the emptied objects' data in the background meanwhile
    return figures


# --- the pairs ------------------------------------------------------------------------------

def worktree(revision: str, into: Path) -> Path:
    """Check `revision` out into a new worktree under `into`; return its path."""
    path = into / revision.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), revision],
                   check=True)
    return path


def run_side(root: Path, folder: str, bucket: str) -> dict:
    """Run one measured poll in a fresh process of the revision at `root`."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--run", str(root), "--folder", folder,
                           "--bucket", bucket], capture_output=True, text=True, cwd=root)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the run at {root} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    figures = json.loads(lines[-1])
    if not figures["ok"]:
        raise SystemExit(f"the poll at {root} failed: {figures['error']}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", help="the revision to compare against")
    parser.add_argument("--against", help="the other revision (default: this checkout, as it stands)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs of runs (default 8)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one run, with this tree as the root
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_once(Path(args.run), args.folder, args.bucket)))
        return
    if not args.base:
        parser.error("name the revision to compare against, e.g. HEAD~1")
    for revision in filter(None, (args.base, args.against)):
        known = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                               capture_output=True)
        if known.returncode != 0:
            parser.error(f"{revision!r} is not a commit of this repository")

    import inbound

    corpus = Path(os.environ.get("HELPDESK_CORPUS") or ROOT.parent / "shared" / "corpus")
    tag = uuid.uuid4().hex[:10]
    folder, bucket = f"INBOX.compare{tag}", f"hd-compare-{tag}"
    trees = Path(tempfile.mkdtemp(prefix="hd-compare-trees-"))
    names = {"base": args.base, "other": args.against or "this checkout"}
    sides: dict[str, Path] = {}
    runs: dict[str, list[dict]] = {"base": [], "other": []}
    try:
        sides["base"] = worktree(args.base, trees)
        sides["other"] = worktree(args.against, trees) if args.against else ROOT
        inbound.fill_folder(folder, inbound.build_mix(corpus, tag))
        inbound._prepare_bucket(bucket)
        for n in range(args.pairs):
            for side in ("base", "other") if n % 2 == 0 else ("other", "base"):
                runs[side].append(run_side(sides[side], folder, bucket))
            base, other = runs["base"][-1], runs["other"][-1]
            print(f"pair {n + 1}: {base['seconds']:.3f} s / {other['seconds']:.3f} s", file=sys.stderr, flush=True)
    finally:
        with inbound.ImapSession(inbound.imap_settings()) as session:
            if session.folder_exists(folder):
                session.delete_folder(folder)
        if inbound._s3_client().bucket_exists(bucket):
            inbound._empty_bucket(bucket)
            inbound._s3_client().remove_bucket(bucket)
        for path in sides.values():
            if path != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)
        shutil.rmtree(trees, ignore_errors=True)
    report(names, runs)


def report(names: dict[str, str], runs: dict[str, list[dict]]) -> None:
    """Print the pairs and the medians as a markdown table, and the figures as a JSON line."""
    ratios = [o["seconds"] / b["seconds"] for b, o in zip(runs["base"], runs["other"])]
    median = statistics.median
    print(json.dumps({"base": names["base"], "other": names["other"], "runs": runs,
                      "seconds_ratio": [round(r, 3) for r in ratios], "seconds_ratio_median": round(median(ratios), 3)}))
    print()
    print(f"| pair | {names['base']}, s | {names['other']}, s | ratio |")
    print("|---|---:|---:|---:|")
    for n, (b, o, r) in enumerate(zip(runs["base"], runs["other"], ratios), 1):
        print(f"| {n} | {b['seconds']:.3f} | {o['seconds']:.3f} | {r:.3f} |")
    for label, key in (("poll, s", "seconds"), ("poller CPU, s", "cpu_seconds"),
                       ("child processes' CPU, s", "helper_cpu_seconds"), ("machine busy CPU, s", "machine_cpu_seconds")):
        print(f"| median {label} | {median(r[key] for r in runs['base']):.3f} "
              f"| {median(r[key] for r in runs['other']):.3f} | |")
    faster = sum(r < 1 for r in ratios)
    print(f"\n{names['other']} / {names['base']}: median ratio of poll seconds {median(ratios):.3f} "
          f"({faster} of {len(ratios)} pairs faster); below 1 means {names['other']} is faster.")


if __name__ == "__main__":
    main()
