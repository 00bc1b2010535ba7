#!/usr/bin/env python3
"""Seeds a moto server with compliant and non-compliant resources for every implemented check
and prints what each check must conclude, as JSON: {"expect": [{"check", "resource", "status"}]}.

Each seed_<group>.py beside this file has seed(session, expect). The AWS_* variables (endpoint,
dummy credentials) come from the environment, as for any boto3 program.

    AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
      python3 tests/scans/seed.py [group,...]
"""
import importlib
import json
import pathlib
import sys

import boto3


def main():
    here = pathlib.Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    only = set(sys.argv[1].split(",")) if len(sys.argv) > 1 and sys.argv[1] else None
    expectations = []

    def expect(check, resource, status):
        assert status in ("pass", "fail", "error", "not_applicable"), status
        expectations.append({"check": check, "resource": resource, "status": status})

    for path in sorted(here.glob("seed_*.py")):
        group = path.stem[len("seed_"):]
        if only is not None and group not in only:
            continue
        module = importlib.import_module(path.stem)
        module.seed(boto3.Session(region_name="us-east-1"), expect)
    json.dump({"expect": expectations}, sys.stdout)


if __name__ == "__main__":
    main()
