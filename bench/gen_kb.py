#!/usr/bin/env python3
"""Writes a synthetic KB of about ENTITIES entities and RELATIONSHIPS relationships (derived edges
included) in the shipped format, for the loader benchmarks. Usage: gen_kb.py DIR ENTITIES RELATIONSHIPS"""
import json, os, random, sys

out, entities, rels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
os.makedirs(f"{out}/common", exist_ok=True)
services = [{"id": f"svc{i}", "name": f"Service {i}", "category": "synthetic"} for i in range(60)]
n_checks = max(10, entities // 6)
n_rem = n_checks
n_frameworks = 7
n_controls = entities - len(services) - n_checks - n_rem - n_frameworks
checks = [{"id": f"check-{i}", "title": f"Synthetic check {i} inspects encryption logging access",
           "description": f"Looks at resource {i} and passes when its setting number {i % 97} is enabled.",
           "services": [f"svc{i % 60}"], "resource_type": "AWS::S3::Bucket", "severity": "medium",
           "refs": {"security_hub": [f"X.{i}"]}, "remediation": f"rem-{i}"} for i in range(n_checks)]
rems = [{"id": f"rem-{i}", "title": f"Fix synthetic {i}", "steps": ["Open the console.", f"Enable setting {i}."],
         "cli": f"aws example enable --id {i}"} for i in range(n_rem)]
json.dump(services, open(f"{out}/common/aws_services.json", "w"))
json.dump(checks, open(f"{out}/common/checks-synthetic.json", "w"))
json.dump(rems, open(f"{out}/common/remediations-synthetic.json", "w"))
derived = n_checks * 2  # applies_to + remediated_by
per_fw = n_controls // n_frameworks
derived += n_controls - n_frameworks * 10  # part_of for non-root controls
written = max(0, rels - derived)
maps_per_fw = written // n_frameworks
for f in range(n_frameworks):
    fid = f"fw{f}"
    d = f"{out}/{fid}"; os.makedirs(d, exist_ok=True)
    json.dump({"id": fid, "version": "1", "name": f"Framework {f}", "publisher": "bench", "url": "https://example.com",
               "summary": "Synthetic.", "kinds": ["group", "control"]}, open(f"{d}/framework.json", "w"))
    controls = []
    for i in range(per_fw):
        group = i < 10
        controls.append({"id": f"{i}", "kind": "group" if group else "control", "parent": None if group else str(i % 10),
                         "title": f"Control {i} of framework {f} about access and encryption",
                         "summary": f"Synthetic control {i} asks for protection number {i % 89}.",
                         "url": "https://example.com", "technical": False, "services": [f"svc{i % 60}"], "attributes": {}})
    json.dump(controls, open(f"{d}/controls.json", "w"))
    edges, seen = [], set()
    while len(edges) < maps_per_fw:
        c, k = random.randrange(10, per_fw), random.randrange(n_checks)
        if (c, k) in seen: continue
        seen.add((c, k))
        edges.append({"type": "maps_to", "from": f"control:{fid}@1:{c}", "to": f"check:kb:check-{k}", "basis": "editorial"})
    json.dump(edges, open(f"{d}/relationships.json", "w"))
json.dump({"kb_version": f"bench-{entities}", "files": [], "totals": {}, "upstream": []}, open(f"{out}/manifest.json", "w"))
