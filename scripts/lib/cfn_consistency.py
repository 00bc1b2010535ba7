"""Consistency rules for cloudformation/*.yaml that neither cfn-lint nor checkov can express.

Run by scripts/check-cloudformation with the venv's Python (it uses cfn-lint's YAML loader, which
understands !Ref, !Sub and the other short forms). Prints one line per problem; exit 1 if any.
"""

import json
import sys
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
CFN = ROOT / "cloudformation"
# Templates that must carry the scan permissions, and so must match scan-policy.json.
SCAN_POLICY_TEMPLATES = ("trial.yaml", "production.yaml", "scan-role.yaml")
# Templates that run the server.
SERVER_TEMPLATES = ("trial.yaml", "production.yaml")

problems = []


def problem(template, message):
    problems.append(f"{template}: {message}")


def plain(value):
    """The template value as plain JSON data (cfn-lint's nodes carry line numbers)."""
    return json.loads(json.dumps(value))


def resources(template, kind):
    return {k: v for k, v in template["Resources"].items() if v.get("Type") == kind}


def env_value(container, name):
    for entry in container.get("Environment", []):
        if isinstance(entry, dict) and entry.get("Name") == name:
            return entry.get("Value")
    return None


def check_scan_policy(name, template, policy):
    scan = template["Resources"].get("ScanPolicy")
    if scan is None or scan.get("Type") != "AWS::IAM::ManagedPolicy":
        problem(name, "no AWS::IAM::ManagedPolicy named ScanPolicy")
        return
    if plain(scan["Properties"]["PolicyDocument"]) != policy:
        problem(name, "ScanPolicy differs from cloudformation/scan-policy.json (copy the statements over)")


def check_server(name, template):
    for logical_id, db in resources(template, "AWS::RDS::DBInstance").items():
        for attribute in ("DeletionPolicy", "UpdateReplacePolicy"):
            if db.get(attribute) not in ("Snapshot", "Retain"):
                problem(name, f"{logical_id} needs {attribute}: Snapshot (a deleted stack must keep the data)")

    execution_roles = resources(template, "AWS::IAM::Role")
    task_definitions = resources(template, "AWS::ECS::TaskDefinition")
    containers = {}
    for logical_id, task in task_definitions.items():
        props = task["Properties"]
        for container in props["ContainerDefinitions"]:
            containers[logical_id] = container
            if container.get("ReadonlyRootFilesystem") is not True:
                problem(name, f"{logical_id}: the root filesystem must be read-only")
            if not any(m.get("ContainerPath") == "/tmp" for m in container.get("MountPoints", [])):
                problem(name, f"{logical_id}: /tmp must be a writable volume")
            grace = env_value(container, "SHUTDOWN_GRACE_SECONDS")
            stop = container.get("StopTimeout")
            if grace is None or stop is None or int(stop) <= int(grace):
                problem(name, f"{logical_id}: StopTimeout ({stop}) must exceed SHUTDOWN_GRACE_SECONDS ({grace})")
            # Every secret must be one the execution role may read, and it may read no other.
            role_id = props["ExecutionRoleArn"]["Fn::GetAtt"][0]
            readable = []
            for policy in execution_roles[role_id]["Properties"].get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    if "secretsmanager:GetSecretValue" in json.dumps(statement.get("Action")):
                        readable += [plain(r) for r in statement["Resource"]]
            for secret in container.get("Secrets", []):
                value_from = plain(secret["ValueFrom"])
                ref = value_from.get("Ref") or value_from.get("Fn::Sub", "").split("}")[0].lstrip("${")
                if {"Ref": ref} not in readable:
                    problem(name, f"{logical_id}: secret {secret['Name']} comes from {ref}, which {role_id} cannot read")

    # The one-off migration task must see the same database and settings as the service.
    if "MigrationTaskDefinition" in containers:
        service, migrate = containers["TaskDefinition"], containers["MigrationTaskDefinition"]
        for key in ("Environment", "Secrets"):
            if plain(service.get(key)) != plain(migrate.get(key)):
                problem(name, f"MigrationTaskDefinition {key} differs from the service's")
        if plain(migrate.get("Command")) != ["migrate"]:
            problem(name, "MigrationTaskDefinition must run `migrate`")

    for logical_id, lb in resources(template, "AWS::ElasticLoadBalancingV2::LoadBalancer").items():
        attributes = {a["Key"]: a["Value"] for a in lb["Properties"].get("LoadBalancerAttributes", [])}
        if attributes.get("idle_timeout.timeout_seconds") != "300":
            problem(name, f"{logical_id}: idle timeout must be 300 s (chat streams)")
    for logical_id, group in resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup").items():
        if group["Properties"].get("HealthCheckPath") != "/health/ready":
            problem(name, f"{logical_id}: health check must be /health/ready")


def main():
    policy = json.loads((CFN / "scan-policy.json").read_text())
    for name in sorted({*SCAN_POLICY_TEMPLATES, *SERVER_TEMPLATES}):
        template, matches = decode(str(CFN / name))
        if matches:
            problem(name, f"does not parse: {matches[0]}")
            continue
        if name in SCAN_POLICY_TEMPLATES:
            check_scan_policy(name, template, policy)
        if name in SERVER_TEMPLATES:
            check_server(name, template)
    for line in problems:
        print(line)
    if problems:
        sys.exit(1)
    print(f"consistent: {', '.join(sorted({*SCAN_POLICY_TEMPLATES, *SERVER_TEMPLATES}))}")


if __name__ == "__main__":
    main()
