#!/usr/bin/env python3
"""Compares a Cloud Optimizer scan with a Prowler run on the same account.

    python3 bench/scan_vs_prowler.py OURS.json PROWLER.ocsf.json

OURS.json is `GET /api/v1/scans/{id}/export?format=json`; PROWLER.ocsf.json is Prowler's
`--output-formats json-ocsf` file. Checks are paired through the catalogue's `refs.prowler`
(data/compliance/common/checks-*.json); verdicts are compared per (check pair, resource ARN,
region) where both tools judged the resource pass or fail. Prints the agreement and every
disagreement.
"""
import collections
import glob
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    ours = json.load(open(sys.argv[1]))["findings"]
    prowler = json.load(open(sys.argv[2]))
    pairs = collections.defaultdict(set)
    for path in glob.glob(str(ROOT / "data/compliance/common/checks-*.json")):
        for check in json.load(open(path)):
            for p in check.get("refs", {}).get("prowler", []):
                pairs[check["id"]].add(p)

    theirs = {}
    for f in prowler:
        status = f.get("status_code")
        if status not in ("PASS", "FAIL"):
            continue
        code = f["metadata"]["event_code"]
        for r in f.get("resources", []):
            theirs[(code, r.get("uid"), r.get("region"))] = status.lower()

    compared = agree = 0
    disagreements = []
    checks_compared = set()
    for f in ours:
        if f["status"] not in ("pass", "fail"):
            continue
        for p in pairs.get(f["check"], ()):
            verdict = theirs.get((p, f["resource"], f["region"]))
            if verdict is None:
                continue
            compared += 1
            checks_compared.add(f["check"])
            if verdict == f["status"]:
                agree += 1
            else:
                disagreements.append(f"{f['check']} / {p} on {f['resource']} ({f['region']}): ours {f['status']}, Prowler {verdict}")
    print(json.dumps({
        "checks_compared": len(checks_compared),
        "verdicts_compared": compared,
        "agreement": round(agree / compared, 4) if compared else None,
    }, indent=1))
    for line in sorted(disagreements):
        print(line)


if __name__ == "__main__":
    main()
