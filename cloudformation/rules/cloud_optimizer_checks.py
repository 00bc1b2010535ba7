"""Cloud Optimizer's own checkov rules for cloudformation/*.yaml (run by scripts/check-cloudformation).

Checkov's built-in checks run too; these state the project's rules outright so a template change that
breaks one fails CI with a message naming the rule: encrypted storage, no public database,
least-privilege roles, no plaintext secrets, logs retained.
"""

import re

from checkov.cloudformation.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

# A variable with one of these in its name carries a secret: it must come from `Secrets`.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL")
# URL variables whose value would embed a password (user:pass@host).
URL_NAMES = {"DATABASE_URL", "REDIS_URL", "NEO4J_URI"}


def _props(conf):
    return conf.get("Properties") or {}


def _true(value):
    return value is True or str(value).lower() == "true"


def _strings(value):
    """Every string inside a value, intrinsic functions included (Fn::Sub text, Ref names)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _environment(container):
    """Name/value pairs of a container's Environment, looking through Fn::If branches."""
    for entry in container.get("Environment") or []:
        candidates = [entry]
        if isinstance(entry, dict) and "Fn::If" in entry:
            candidates = [b for b in entry["Fn::If"][1:] if isinstance(b, dict)]
        for item in candidates:
            if "Name" in item:
                yield item["Name"], item.get("Value")


class NoSecretsInContainerEnvironment(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Secrets reach containers through ECS Secrets, never plain Environment values",
            id="CKV_CO_1",
            categories=[CheckCategories.SECRETS],
            supported_resources=["AWS::ECS::TaskDefinition"],
        )

    def scan_resource_conf(self, conf):
        for container in _props(conf).get("ContainerDefinitions") or []:
            for name, value in _environment(container):
                if not isinstance(name, str):
                    return CheckResult.FAILED
                if SECRET_NAME.search(name):
                    return CheckResult.FAILED
                if name in URL_NAMES and any("@" in s for s in _strings(value)):
                    return CheckResult.FAILED
        return CheckResult.PASSED


class DatabaseEncryptedPrivateAndKept(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            # DeletionPolicy is not passed to checkov checks: scripts/lib/cfn_consistency.py checks it.
            name="RDS: storage encrypted and explicitly not publicly accessible",
            id="CKV_CO_2",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["AWS::RDS::DBInstance"],
        )

    def scan_resource_conf(self, conf):
        props = _props(conf)
        if not _true(props.get("StorageEncrypted")):
            return CheckResult.FAILED
        if str(props.get("PubliclyAccessible")).lower() != "false":
            return CheckResult.FAILED
        return CheckResult.PASSED


class StorageEncrypted(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Caches and buckets are encrypted (ElastiCache at rest and in transit, S3 default encryption)",
            id="CKV_CO_3",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["AWS::ElastiCache::ReplicationGroup", "AWS::S3::Bucket"],
        )

    def scan_resource_conf(self, conf):
        props = _props(conf)
        if conf.get("Type") == "AWS::S3::Bucket":
            rules = (props.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration")
            block = props.get("PublicAccessBlockConfiguration") or {}
            public_blocked = all(
                _true(block.get(k))
                for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
            )
            return CheckResult.PASSED if rules and public_blocked else CheckResult.FAILED
        ok = _true(props.get("AtRestEncryptionEnabled")) and _true(props.get("TransitEncryptionEnabled"))
        return CheckResult.PASSED if ok else CheckResult.FAILED


def _statements(document):
    statements = (document or {}).get("Statement") or []
    return statements if isinstance(statements, list) else [statements]


def _listed(value):
    return value if isinstance(value, list) else [value]


class LeastPrivilegeRoles(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="IAM: no Allow of every action or of a whole service, no broad AWS managed policies",
            id="CKV_CO_4",
            categories=[CheckCategories.IAM],
            supported_resources=["AWS::IAM::Role", "AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"],
        )

    BROAD_MANAGED = re.compile(r"AdministratorAccess|PowerUserAccess|FullAccess|IAMFullAccess")

    def scan_resource_conf(self, conf):
        props = _props(conf)
        documents = []
        if "PolicyDocument" in props:
            documents.append(props["PolicyDocument"])
        for policy in props.get("Policies") or []:
            branches = [policy]
            if isinstance(policy, dict) and "Fn::If" in policy:
                branches = [b for b in policy["Fn::If"][1:] if isinstance(b, dict)]
            documents.extend(b.get("PolicyDocument") for b in branches if "PolicyDocument" in b)
        for document in documents:
            for statement in _statements(document):
                if statement.get("Effect") != "Allow":
                    continue
                for action in _listed(statement.get("Action") or []):
                    if isinstance(action, str) and (action == "*" or action.endswith(":*")):
                        return CheckResult.FAILED
                if "NotAction" in statement:
                    return CheckResult.FAILED
        for arn in _strings(props.get("ManagedPolicyArns") or []):
            if self.BROAD_MANAGED.search(arn):
                return CheckResult.FAILED
        return CheckResult.PASSED


class LogsRetained(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Every log group has a retention period",
            id="CKV_CO_5",
            categories=[CheckCategories.LOGGING],
            supported_resources=["AWS::Logs::LogGroup"],
        )

    def scan_resource_conf(self, conf):
        return CheckResult.PASSED if _props(conf).get("RetentionInDays") else CheckResult.FAILED


NoSecretsInContainerEnvironment()
DatabaseEncryptedPrivateAndKept()
StorageEncrypted()
LeastPrivilegeRoles()
LogsRetained()
