#!/usr/bin/env python3
"""Compares a Cloud Optimizer scan with a Prowler run on the same account.

    python3 bench/scan_vs_prowler.py OURS.json PROWLER.ocsf.json

OURS.json is `GET /api/v1/scans/{id}/export?format=json`; PROWLER.ocsf.json is Prowler's
`--output-formats json-ocsf` file. Checks are paired through the catalogue's `refs.prowler`
(data/compliance/common/checks-*.json); verdicts are compared per (check pair, resource ARN,
region) where both tools judged the resource pass or fail, over every related pair, and over
the pairs bench/prowler_map.json keeps as testing the same thing (groups and exclusions
reviewed by hand there). Prints both agreements and every disagreement of the second.
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

    mapping = json.load(open(ROOT / "bench/prowler_map.json"))
    not_equivalent = set(mapping["not_equivalent"])

    ours_by = collections.defaultdict(dict)
    for f in ours:
        if f["status"] in ("pass", "fail"):
            ours_by[(f["resource"], f["region"])][f["check"]] = f["status"]

    def compare(units):
        """units: (label, our checks, Prowler checks). Per resource, a side's verdict is fail
        when any of its checks failed it, pass when every one that judged it passed."""
        compared = agree = 0
        disagreements = []
        checks = set()
        for (resource, region), verdicts in ours_by.items():
            for label, mine, theirs_ids in units:
                a = [verdicts[c] for c in mine if c in verdicts]
                b = [theirs[(p, resource, region)] for p in theirs_ids if (p, resource, region) in theirs]
                if not a or not b:
                    continue
                a = "fail" if "fail" in a else "pass"
                b = "fail" if "fail" in b else "pass"
                compared += 1
                checks.update(mine)
                if a == b:
                    agree += 1
                else:
                    disagreements.append(f"{label} on {resource} ({region}): ours {a}, Prowler {b}")
        return compared, agree, disagreements, checks

    related = [(f"{c} / {p}", [c], [p]) for c, ps in pairs.items() for p in sorted(ps)]
    labels = {u[0] for u in related}
    for label in not_equivalent:
        assert label in labels, f"bench/prowler_map.json: {label} is not a catalogue pair"
    for g in mapping["groups"]:
        for c in g["ours"]:
            for p in g["prowler"]:
                assert f"{c} / {p}" in labels, f"bench/prowler_map.json: {c} / {p} is not a catalogue pair"
    grouped = {c for g in mapping["groups"] for c in g["ours"]}
    equivalent = [u for u in related if u[0] not in not_equivalent and u[1][0] not in grouped]
    equivalent += [(" + ".join(g["ours"]) + " / " + " + ".join(g["prowler"]), g["ours"], g["prowler"])
                   for g in mapping["groups"]]

    summary = {}
    for name, units in (("related_pairs", related), ("equivalent_checks", equivalent)):
        compared, agree, disagreements, checks = compare(units)
        summary[name] = {
            "checks_compared": len(checks),
            "verdicts_compared": compared,
            "agreement": round(agree / compared, 4) if compared else None,
            "disagreements": len(disagreements),
        }
        if name == "equivalent_checks":
            shown = disagreements
    print(json.dumps(summary, indent=1))
    print("disagreements between equivalent checks:")
    for line in sorted(shown):
        print(line)


if __name__ == "__main__":
    main()
