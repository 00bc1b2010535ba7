#!/usr/bin/env python3
"""Template verdicts and wall time: our static checks (examples/analyse_document) against
checkov on the IaC fixture corpus, for the checks both have (bench/checkov_map.json).

    python3 bench/documents_vs_checkov.py [--runs N] [--profile debug]

Installs checkov into target/checkov-venv when missing. Writes the differences to
target/documents-vs-checkov.json and prints agreement, differences and the wall-time ratio.
Run from the repository root.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/documents"
VENV = ROOT / "target/checkov-venv"
CHECKOV = VENV / "bin/checkov"
CORPUS = ROOT / "target/bench-corpus"
OUT = ROOT / "target/documents-vs-checkov.json"

# checkov 3.3.30 stops on this fixture (TypeError in its !Select renderer: `'Fn::' in True`) and
# then hangs in its process pool, taking the whole directory run with it. It is left out of both
# tools' runs; the script still tries it alone and reports what checkov does.
CHECKOV_CRASHES = {"cloudformation/conditions.yaml"}
PLAN = "terraform/plan.json"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# The version the figures in BENCHMARKS.md were measured with; a newer checkov changes its
# verdicts and its speed.
CHECKOV_VERSION = "3.3.30"


def ensure_checkov():
    if CHECKOV.exists():
        return
    sh([sys.executable, "-m", "venv", str(VENV)])
    sh([str(VENV / "bin/pip"), "install", "--quiet", f"checkov=={CHECKOV_VERSION}"])


def build_ours(profile):
    env = dict(os.environ, SQLX_OFFLINE="true")
    cmd = ["cargo", "build", "--quiet", "--example", "analyse_document"]
    if profile != "debug":
        cmd += ["--profile", profile]
    sh(cmd, cwd=ROOT, env=env)
    sub = "debug" if profile in ("debug", "dev") else profile
    return ROOT / "target" / sub / "examples/analyse_document"


def stage_corpus():
    """Templates only (no .expected.json), one directory per format, as a user's repository."""
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    files = []
    for sub in ("cloudformation", "terraform"):
        (CORPUS / sub).mkdir(parents=True)
        for f in sorted((FIXTURES / sub).iterdir()):
            rel = f"{sub}/{f.name}"
            if f.name.endswith(".expected.json") or rel in CHECKOV_CRASHES or rel == PLAN:
                continue
            if f.is_file():
                shutil.copy(f, CORPUS / rel)
                files.append(rel)
    return files


def checkov_cmds():
    common = ["--skip-download", "-o", "json", "--quiet", "--compact"]
    return [
        [str(CHECKOV), "-d", str(CORPUS), "--framework", "cloudformation", "terraform", *common],
        [str(CHECKOV), "-f", str(FIXTURES / PLAN), "--framework", "terraform_plan", *common],
    ]


def run_checkov():
    """Returns ({(file, resource, check_id): 'pass'|'fail'}, wall seconds)."""
    verdicts = {}
    start = time.perf_counter()
    outputs = []
    for cmd in checkov_cmds():
        # checkov exits 1 when a check fails: that is its normal result here.
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if p.returncode not in (0, 1):
            sys.exit(f"checkov failed ({p.returncode}): {p.stderr[-2000:]}")
        outputs.append(p.stdout)
    wall = time.perf_counter() - start
    for out in outputs:
        reports = json.loads(out)
        for report in reports if isinstance(reports, list) else [reports]:
            for key, status in (("passed_checks", "pass"), ("failed_checks", "fail")):
                for r in report["results"].get(key, []):
                    path = Path(r["file_abs_path"]).resolve()
                    try:
                        rel = str(path.relative_to(CORPUS))
                    except ValueError:
                        rel = str(path.relative_to(FIXTURES))
                    res = r["resource"]
                    if rel.startswith("cloudformation/"):
                        # `AWS::S3::Bucket.Logs` -> the logical id.
                        res = res.split(".", 1)[1]
                    verdicts[(rel, res, r["check_id"])] = status
    return verdicts, wall


def ours_files(files):
    return [str(CORPUS / f) for f in files] + [str(FIXTURES / PLAN)]


def run_ours(binary, files):
    """Returns ({(file, resource, check): status}, wall seconds, in-process ms)."""
    start = time.perf_counter()
    p = subprocess.run([str(binary), *ours_files(files)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    verdicts, analysis_ms = {}, 0.0
    for line in p.stdout.splitlines():
        row = json.loads(line)
        path = Path(row.get("file", "")).resolve()
        if row["type"] == "document":
            analysis_ms += row["ms_min"]
        if row["type"] != "finding":
            continue
        try:
            rel = str(path.relative_to(CORPUS))
        except ValueError:
            rel = str(path.relative_to(FIXTURES))
        verdicts[(rel, row["resource"], row["check"])] = (row["status"], row["resource_type"])
    return verdicts, wall, analysis_ms


def compare(ours, theirs, mapping):
    by_resource = {}
    for (f, res, cid), status in theirs.items():
        by_resource.setdefault((f, res), {})[cid] = status
    pairs, diffs, compared_checks = [], [], set()
    for (f, res, check), (status, rtype) in sorted(ours.items()):
        ids = mapping.get(check)
        if not ids:
            continue
        theirs_here = {cid: s for cid, s in by_resource.get((f, res), {}).items() if cid in ids}
        if not theirs_here:
            continue
        verdict = "fail" if "fail" in theirs_here.values() else "pass"
        row = {
            "file": f,
            "resource": res,
            "resource_type": rtype,
            "check": check,
            "checkov": theirs_here,
            "ours": status,
            "checkov_verdict": verdict,
        }
        pairs.append(row)
        compared_checks.add(check)
        if status != verdict:
            diffs.append(row)
    return pairs, diffs, compared_checks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each tool (median)")
    ap.add_argument("--profile", default="debug", help="cargo profile of the example")
    args = ap.parse_args()

    ensure_checkov()
    binary = build_ours(args.profile)
    files = stage_corpus()
    mapping = json.loads((ROOT / "bench/checkov_map.json").read_text())["map"]
    version = subprocess.run([str(CHECKOV), "--version"], capture_output=True, text=True).stdout.strip()

    for rel in sorted(CHECKOV_CRASHES):
        try:
            p = subprocess.run(
                [str(CHECKOV), "-f", str(FIXTURES / rel), "--skip-download", "-o", "json", "--quiet", "--compact"],
                capture_output=True, text=True, timeout=120,
            )
            print(f"checkov alone on {rel}: exit {p.returncode}, {len(p.stdout)} bytes of output")
        except subprocess.TimeoutExpired:
            print(f"checkov alone on {rel}: no answer after 120 s")

    checkov_walls, ours_walls, ours_ms = [], [], []
    theirs = ours = None
    for _ in range(args.runs):
        theirs, w = run_checkov()
        checkov_walls.append(w)
        ours, w, ms = run_ours(binary, files)
        ours_walls.append(w)
        ours_ms.append(ms)

    pairs, diffs, compared_checks = compare(ours, theirs, mapping)
    unknown = [d for d in diffs if d["ours"] == "unknown"]
    decided = [p for p in pairs if p["ours"] != "unknown"]
    decided_agree = sum(1 for p in decided if p["ours"] == p["checkov_verdict"])
    agree = len(pairs) - len(diffs)

    print(f"checkov {version}; corpus: {len(files) + 1} templates "
          f"({len(files)} in the directory run, plus {PLAN} as a plan)")
    print(f"mapped checks: {len(mapping)}; compared on this corpus: {len(compared_checks)}")
    print(f"compared verdicts (file, resource, check): {len(pairs)}")
    print(f"agreement: {agree}/{len(pairs)} = {100 * agree / max(len(pairs), 1):.1f} % "
          f"(our unknown counted as a difference: {len(unknown)})")
    print(f"agreement where we decide pass/fail: {decided_agree}/{len(decided)} = "
          f"{100 * decided_agree / max(len(decided), 1):.1f} %")
    print("differences:")
    for d in diffs:
        ids = ",".join(f"{k}={v}" for k, v in sorted(d["checkov"].items()))
        print(f"  {d['file']} {d['resource']} {d['check']}: ours {d['ours']}, checkov {d['checkov_verdict']} ({ids})")
    cw, ow = statistics.median(checkov_walls), statistics.median(ours_walls)
    print(f"wall time, median of {args.runs}: checkov {cw:.2f} s "
          f"({', '.join(f'{w:.2f}' for w in checkov_walls)}); "
          f"ours ({args.profile} build) {ow * 1000:.0f} ms "
          f"({', '.join(f'{w * 1000:.0f}' for w in ours_walls)}), "
          f"of which analysis {statistics.median(ours_ms):.0f} ms")
    print(f"ratio: ours is {cw / ow:.0f}x faster")
    OUT.write_text(json.dumps({
        "checkov": version,
        "profile": args.profile,
        "pairs": len(pairs),
        "agreement": agree,
        "unknown": len(unknown),
        "compared_checks": sorted(compared_checks),
        "checkov_wall_s": checkov_walls,
        "ours_wall_s": ours_walls,
        "differences": diffs,
    }, indent=2) + "\n")
    print(f"written: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
