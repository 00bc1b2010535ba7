"""moto seeding for the S3, CloudTrail, CloudWatch, GuardDuty and Security Hub checks.

`seed(session, expect)` creates compliant and non-compliant resources (names start with
`chk-logging-`) and records the verdict each check should report on them.

What moto cannot express, and what is expected instead, is said where it happens:
- S3 MFA delete: moto drops MFADelete from GetBucketVersioning, so every bucket fails.
- s3-account-public-access-blocked: the SDK puts the account id in front of the S3 Control
  host (123456789012.<endpoint host>), which only resolves when the test setup points
  AWS_ENDPOINT_URL_S3_CONTROL at a host name with a wildcard-free /etc/hosts entry
  (`127.0.0.1 123456789012.localhost`, endpoint http://localhost:PORT); without it the check
  reports `error`. The account setting is left unset, so it fails when reachable.
- cloudtrail-cloudwatch-logs-integration: moto's GetTrailStatus never reports a CloudWatch Logs
  delivery time, so even the trail with a log group fails (no delivery within a day).
- S3 versioning and empty notification configurations, and CloudWatch alarms: moto's answers
  do not parse in the Rust SDK (details where expected) -> error.
- Region-level verdicts (trail logging, multi-Region trail, CIS alarms) are the same in both
  regions because the multi-Region trail covers both; pass and fail are shown across
  different CIS alarms instead (complete chain, topic without subscriber, filter without
  alarm, nothing).
- guardduty-high-severity-findings-addressed: moto has no ListFindings (404) -> error.
- securityhub-enabled: moto has no GetEnabledStandards, so an enabled hub reports error; the
  region without a hub fails.
"""

import json
import os

ACCOUNT = "123456789012"
P = "chk-logging-"
US, EU = "us-east-1", "eu-west-1"

GOOD = P + "good"  # us-east-1, every setting on
BAD = P + "bad"  # eu-west-1, public, nothing on
TRAIL_BUCKET = P + "trail-logs"  # us-east-1, CloudTrail destination
ACCESS_LOGS = P + "access-logs"  # us-east-1, server access log target

S3_BUCKET_CHECKS = [
    "s3-bucket-level-public-access-blocked",
    "s3-bucket-default-encryption",
    "s3-bucket-kms-encryption",
    "s3-bucket-requires-tls",
    "s3-bucket-versioning-enabled",
    "s3-bucket-server-access-logging",
    "s3-bucket-no-public-read",
    "s3-bucket-no-public-write",
    "s3-bucket-acls-disabled",
    "s3-bucket-mfa-delete-enabled",
    "s3-bucket-lifecycle-configured",
    "s3-versioned-bucket-lifecycle-configured",
    "s3-bucket-object-lock-enabled",
    "s3-bucket-event-notifications",
    "s3-bucket-cross-region-replication",
    "s3-bucket-cross-account-access-restricted",
]


def bucket_arn(name):
    return f"arn:aws:s3:::{name}"


def tls_statement(name):
    return {
        "Sid": "DenyPlainHttp",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn(name), bucket_arn(name) + "/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def block_all(s3, name):
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def seed_s3(session, expect, topic_arn):
    s3 = session.client("s3", region_name=US)
    s3_eu = session.client("s3", region_name=EU)

    s3.create_bucket(Bucket=ACCESS_LOGS)
    s3.put_bucket_policy(
        Bucket=ACCESS_LOGS,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "S3ServerAccessLogs",
                        "Effect": "Allow",
                        "Principal": {"Service": "logging.s3.amazonaws.com"},
                        "Action": "s3:PutObject",
                        "Resource": bucket_arn(ACCESS_LOGS) + "/*",
                        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
                    }
                ],
            }
        ),
    )
    s3_eu.create_bucket(Bucket=BAD, CreateBucketConfiguration={"LocationConstraint": EU})

    # Compliant bucket: Object Lock (which turns versioning on), KMS default encryption,
    # TLS-only policy, access logging, BucketOwnerEnforced, lifecycle, notifications and
    # replication to the eu-west-1 bucket.
    s3.create_bucket(Bucket=GOOD, ObjectLockEnabledForBucket=True)
    s3.put_bucket_versioning(Bucket=GOOD, VersioningConfiguration={"Status": "Enabled"})
    block_all(s3, GOOD)
    s3.put_bucket_encryption(
        Bucket=GOOD,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": f"arn:aws:kms:{US}:{ACCOUNT}:alias/{P}s3",
                    }
                }
            ]
        },
    )
    s3.put_bucket_policy(
        Bucket=GOOD,
        Policy=json.dumps({"Version": "2012-10-17", "Statement": [tls_statement(GOOD)]}),
    )
    s3.put_bucket_logging(
        Bucket=GOOD,
        BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": ACCESS_LOGS, "TargetPrefix": "good/"}
        },
    )
    s3.put_bucket_ownership_controls(
        Bucket=GOOD,
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=GOOD,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire-old-versions",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
                }
            ]
        },
    )
    s3.put_bucket_notification_configuration(
        Bucket=GOOD,
        NotificationConfiguration={
            "TopicConfigurations": [
                {"TopicArn": topic_arn, "Events": ["s3:ObjectRemoved:*"]}
            ]
        },
    )
    s3.put_bucket_replication(
        Bucket=GOOD,
        ReplicationConfiguration={
            "Role": f"arn:aws:iam::{ACCOUNT}:role/{P}replication",
            "Rules": [
                {
                    "ID": "to-eu",
                    "Status": "Enabled",
                    "Priority": 1,
                    "Filter": {},
                    "DeleteMarkerReplication": {"Status": "Disabled"},
                    "Destination": {"Bucket": bucket_arn(BAD)},
                }
            ],
        },
    )

    # Non-compliant bucket: public read/write ACL, a policy giving another account
    # PutBucketAcl, nothing else configured.
    # Explicit grants: moto writes only the first permission of a canned ACL's grant.
    owner = s3_eu.get_bucket_acl(Bucket=BAD)["Owner"]
    everyone = {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"}
    s3_eu.put_bucket_acl(
        Bucket=BAD,
        AccessControlPolicy={
            "Owner": owner,
            "Grants": [
                {"Grantee": {"Type": "CanonicalUser", "ID": owner["ID"]}, "Permission": "FULL_CONTROL"},
                {"Grantee": everyone, "Permission": "READ"},
                {"Grantee": everyone, "Permission": "WRITE"},
            ],
        },
    )
    s3_eu.put_bucket_policy(
        Bucket=BAD,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "OtherAccountAcl",
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
                        "Action": ["s3:PutBucketAcl", "s3:GetObject"],
                        "Resource": [bucket_arn(BAD), bucket_arn(BAD) + "/*"],
                    }
                ],
            }
        ),
    )

    # CloudTrail's destination: private, access-logged, versioned but without lifecycle.
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    block_all(s3, TRAIL_BUCKET)
    s3.put_bucket_versioning(Bucket=TRAIL_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_logging(
        Bucket=TRAIL_BUCKET,
        BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": ACCESS_LOGS, "TargetPrefix": "trail/"}
        },
    )
    s3.put_bucket_policy(
        Bucket=TRAIL_BUCKET,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "CloudTrailWrite",
                        "Effect": "Allow",
                        "Principal": {"Service": "cloudtrail.amazonaws.com"},
                        "Action": "s3:PutObject",
                        "Resource": bucket_arn(TRAIL_BUCKET) + f"/AWSLogs/{ACCOUNT}/*",
                        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
                    }
                ],
            }
        ),
    )

    verdicts = {
        GOOD: {c: "pass" for c in S3_BUCKET_CHECKS},
        BAD: {c: "fail" for c in S3_BUCKET_CHECKS},
        TRAIL_BUCKET: {
            "s3-bucket-level-public-access-blocked": "pass",
            "s3-bucket-default-encryption": "fail",
            "s3-bucket-kms-encryption": "fail",
            "s3-bucket-requires-tls": "fail",
            "s3-bucket-versioning-enabled": "pass",
            "s3-bucket-server-access-logging": "pass",
            "s3-bucket-no-public-read": "pass",
            "s3-bucket-no-public-write": "pass",
            "s3-bucket-acls-disabled": "fail",
            "s3-bucket-mfa-delete-enabled": "fail",
            "s3-bucket-lifecycle-configured": "fail",
            "s3-versioned-bucket-lifecycle-configured": "fail",
            "s3-bucket-object-lock-enabled": "fail",
            "s3-bucket-event-notifications": "fail",
            "s3-bucket-cross-region-replication": "fail",
            "s3-bucket-cross-account-access-restricted": "pass",
        },
        ACCESS_LOGS: {
            "s3-bucket-level-public-access-blocked": "fail",
            "s3-bucket-default-encryption": "fail",
            "s3-bucket-kms-encryption": "fail",
            "s3-bucket-requires-tls": "fail",
            "s3-bucket-versioning-enabled": "fail",
            "s3-bucket-server-access-logging": "fail",
            "s3-bucket-no-public-read": "pass",
            "s3-bucket-no-public-write": "pass",
            "s3-bucket-acls-disabled": "fail",
            "s3-bucket-mfa-delete-enabled": "fail",
            "s3-bucket-lifecycle-configured": "fail",
            "s3-versioned-bucket-lifecycle-configured": "not_applicable",
            "s3-bucket-object-lock-enabled": "fail",
            "s3-bucket-event-notifications": "fail",
            "s3-bucket-cross-region-replication": "fail",
            "s3-bucket-cross-account-access-restricted": "pass",
        },
    }
    # Not versioned, so the versioned-bucket lifecycle check does not apply.
    verdicts[BAD]["s3-versioned-bucket-lifecycle-configured"] = "not_applicable"
    # moto answers GetBucketVersioning with a <GetBucketVersioningResponse> root and an empty
    # notification configuration with <GetBucketNotificationResponse>; the Rust SDK rejects
    # both roots (boto3 does not check them), so these checks report error in moto. The
    # verdicts above are what AWS would give (MFA delete would still fail: moto never
    # stores MFADelete).
    for name in verdicts:
        for check in [
            "s3-bucket-versioning-enabled",
            "s3-bucket-mfa-delete-enabled",
            "s3-versioned-bucket-lifecycle-configured",
        ]:
            verdicts[name][check] = "error"
        if name != GOOD:
            verdicts[name]["s3-bucket-event-notifications"] = "error"
    for name, checks in verdicts.items():
        for check, status in checks.items():
            expect(check, bucket_arn(name), status)

    expect(
        "s3-account-public-access-blocked",
        f"arn:aws:iam::{ACCOUNT}:root",
        "fail" if os.environ.get("AWS_ENDPOINT_URL_S3_CONTROL") else "error",
    )


CIS_PATTERNS = {
    "cloudwatch-alarm-unauthorized-api-calls": '{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") && ($.sourceIPAddress!="delivery.logs.amazonaws.com") && ($.eventName!="HeadBucket") }',
    "cloudwatch-alarm-root-user-activity": '{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType != "AwsServiceEvent" }',
    "cloudwatch-alarm-console-signin-without-mfa": '{ ($.eventName = "ConsoleLogin") && ($.additionalEventData.MFAUsed != "Yes") && ($.userIdentity.type = "IAMUser") && ($.responseElements.ConsoleLogin = "Success") }',
    "cloudwatch-alarm-iam-policy-changes": "{($.eventName=DeleteGroupPolicy)||($.eventName=DeleteRolePolicy)||($.eventName=DeleteUserPolicy)||($.eventName=PutGroupPolicy)||($.eventName=PutRolePolicy)||($.eventName=PutUserPolicy)||($.eventName=CreatePolicy)||($.eventName=DeletePolicy)||($.eventName=CreatePolicyVersion)||($.eventName=DeletePolicyVersion)||($.eventName=AttachRolePolicy)||($.eventName=DetachRolePolicy)||($.eventName=AttachUserPolicy)||($.eventName=DetachUserPolicy)||($.eventName=AttachGroupPolicy)||($.eventName=DetachGroupPolicy)}",
}
ALARM_CHECKS = [
    "cloudwatch-alarm-unauthorized-api-calls",
    "cloudwatch-alarm-console-signin-without-mfa",
    "cloudwatch-alarm-root-user-activity",
    "cloudwatch-alarm-iam-policy-changes",
    "cloudwatch-alarm-cloudtrail-config-changes",
    "cloudwatch-alarm-console-auth-failures",
    "cloudwatch-alarm-kms-key-disable-or-deletion",
    "cloudwatch-alarm-s3-bucket-policy-changes",
    "cloudwatch-alarm-config-changes",
    "cloudwatch-alarm-security-group-changes",
    "cloudwatch-alarm-network-acl-changes",
    "cloudwatch-alarm-network-gateway-changes",
    "cloudwatch-alarm-route-table-changes",
    "cloudwatch-alarm-vpc-changes",
    "cloudwatch-alarm-organizations-changes",
]


def seed_monitoring(session, expect):
    """SNS topics for the alarm chain; returns the subscribed topic's ARN."""
    sns = session.client("sns", region_name=US)
    topic = sns.create_topic(Name=P + "alarms")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="security@example.com")
    silent = sns.create_topic(Name=P + "alarms-unsubscribed")["TopicArn"]
    return topic, silent


def seed_cloudtrail_and_cloudwatch(session, expect, topic, silent):
    logs = session.client("logs", region_name=US)
    logs_eu = session.client("logs", region_name=EU)
    cw = session.client("cloudwatch", region_name=US)

    # The trail's log group: a year's retention and a KMS key.
    group = P + "trail"
    logs.create_log_group(
        logGroupName=group, kmsKeyId=f"arn:aws:kms:{US}:{ACCOUNT}:key/{P}logs"
    )
    logs.put_retention_policy(logGroupName=group, retentionInDays=365)
    # A log group with short retention and no key.
    short = P + "short"
    logs_eu.create_log_group(logGroupName=short)
    logs_eu.put_retention_policy(logGroupName=short, retentionInDays=7)
    expect("cloudwatch-log-group-retention-set", f"arn:aws:logs:{US}:{ACCOUNT}:log-group:{group}", "pass")
    expect("cloudwatch-log-group-kms-encrypted", f"arn:aws:logs:{US}:{ACCOUNT}:log-group:{group}", "pass")
    expect("cloudwatch-log-group-retention-set", f"arn:aws:logs:{EU}:{ACCOUNT}:log-group:{short}", "fail")
    expect("cloudwatch-log-group-kms-encrypted", f"arn:aws:logs:{EU}:{ACCOUNT}:log-group:{short}", "fail")

    for check, pattern in CIS_PATTERNS.items():
        metric = check.removeprefix("cloudwatch-alarm-")
        logs.put_metric_filter(
            logGroupName=group,
            filterName=P + metric,
            filterPattern=pattern,
            metricTransformations=[
                {"metricName": metric, "metricNamespace": "CISBenchmark", "metricValue": "1"}
            ],
        )
    # Complete chains for two alarms, a topic without subscriber for one, no alarm for the
    # IAM policy filter.
    for metric, action in [
        ("unauthorized-api-calls", topic),
        ("root-user-activity", topic),
        ("console-signin-without-mfa", silent),
    ]:
        cw.put_metric_alarm(
            AlarmName=P + metric,
            MetricName=metric,
            Namespace="CISBenchmark",
            Statistic="Sum",
            Period=300,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            AlarmActions=[action],
        )
    # On AWS the first two pass and the other two fail (no subscriber, no alarm). The
    # CloudWatch SDK speaks the rpc-v2-cbor protocol, which moto does not (it answers XML),
    # so DescribeAlarms fails and every alarm whose filter exists reports error in moto.
    # Alarms without a matching filter fail before any CloudWatch call.
    for region in (US, EU):
        for check in ALARM_CHECKS:
            expect(
                check,
                f"arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:*",
                "error" if check in CIS_PATTERNS else "fail",
            )

    ct = session.client("cloudtrail", region_name=US)
    ct_eu = session.client("cloudtrail", region_name=EU)
    good = ct.create_trail(
        Name=P + "trail",
        S3BucketName=TRAIL_BUCKET,
        IsMultiRegionTrail=True,
        EnableLogFileValidation=True,
        KmsKeyId=f"arn:aws:kms:{US}:{ACCOUNT}:key/{P}trail",
        CloudWatchLogsLogGroupArn=f"arn:aws:logs:{US}:{ACCOUNT}:log-group:{group}:*",
        CloudWatchLogsRoleArn=f"arn:aws:iam::{ACCOUNT}:role/{P}trail-to-logs",
    )["TrailARN"]
    ct.put_event_selectors(
        TrailName=P + "trail",
        EventSelectors=[{"ReadWriteType": "All", "IncludeManagementEvents": True}],
    )
    ct.start_logging(Name=P + "trail")
    bad = ct_eu.create_trail(Name=P + "trail-eu", S3BucketName=BAD)["TrailARN"]

    for region in (US, EU):
        arn = f"arn:aws:cloudtrail:{region}:{ACCOUNT}:trail/*"
        expect("cloudtrail-trail-enabled", arn, "pass")
        expect("cloudtrail-multi-region-trail-enabled", arn, "pass")
    for check in [
        "cloudtrail-log-file-validation-enabled",
        "cloudtrail-encrypted-with-kms",
        "cloudtrail-log-bucket-not-public",
        "cloudtrail-log-bucket-access-logging",
    ]:
        expect(check, good, "pass")
        expect(check, bad, "fail")
    # moto reports no CloudWatch Logs delivery time (see the module docstring).
    expect("cloudtrail-cloudwatch-logs-integration", good, "fail")
    expect("cloudtrail-cloudwatch-logs-integration", bad, "fail")


GUARDDUTY_FEATURES = [
    "guardduty-s3-protection-enabled",
    "guardduty-eks-audit-log-monitoring-enabled",
    "guardduty-lambda-protection-enabled",
    "guardduty-rds-protection-enabled",
    "guardduty-ec2-malware-protection-enabled",
    "guardduty-runtime-monitoring-enabled",
    "guardduty-eks-runtime-monitoring-enabled",
    "guardduty-ecs-runtime-monitoring-enabled",
    "guardduty-ec2-runtime-monitoring-enabled",
]


def seed_guardduty(session, expect):
    on = session.client("guardduty", region_name=US).create_detector(
        Enable=True,
        Features=[
            {"Name": "S3_DATA_EVENTS", "Status": "ENABLED"},
            {"Name": "EKS_AUDIT_LOGS", "Status": "DISABLED"},
            {"Name": "LAMBDA_NETWORK_LOGS", "Status": "ENABLED"},
            {"Name": "RDS_LOGIN_EVENTS", "Status": "DISABLED"},
            {"Name": "EBS_MALWARE_PROTECTION", "Status": "ENABLED"},
            {
                "Name": "RUNTIME_MONITORING",
                "Status": "ENABLED",
                "AdditionalConfiguration": [
                    {"Name": "EKS_ADDON_MANAGEMENT", "Status": "ENABLED"},
                    {"Name": "ECS_FARGATE_AGENT_MANAGEMENT", "Status": "DISABLED"},
                    {"Name": "EC2_AGENT_MANAGEMENT", "Status": "ENABLED"},
                ],
            },
        ],
    )["DetectorId"]
    off = session.client("guardduty", region_name=EU).create_detector(Enable=False)["DetectorId"]
    on_arn = f"arn:aws:guardduty:{US}:{ACCOUNT}:detector/{on}"
    off_arn = f"arn:aws:guardduty:{EU}:{ACCOUNT}:detector/{off}"
    expect("guardduty-enabled", on_arn, "pass")
    expect("guardduty-enabled", off_arn, "fail")
    enabled = {
        "guardduty-s3-protection-enabled",
        "guardduty-lambda-protection-enabled",
        "guardduty-ec2-malware-protection-enabled",
        "guardduty-runtime-monitoring-enabled",
        "guardduty-eks-runtime-monitoring-enabled",
        "guardduty-ec2-runtime-monitoring-enabled",
    }
    for check in GUARDDUTY_FEATURES:
        expect(check, on_arn, "pass" if check in enabled else "fail")
        expect(check, off_arn, "fail")
    # moto has no ListFindings (see the module docstring).
    expect("guardduty-high-severity-findings-addressed", on_arn, "error")
    expect("guardduty-high-severity-findings-addressed", off_arn, "error")


def seed_securityhub(session, expect):
    session.client("securityhub", region_name=US).enable_security_hub(
        EnableDefaultStandards=True
    )
    # moto has no GetEnabledStandards (see the module docstring).
    expect("securityhub-enabled", f"arn:aws:securityhub:{US}:{ACCOUNT}:hub/default", "error")
    expect("securityhub-enabled", f"arn:aws:securityhub:{EU}:{ACCOUNT}:hub/default", "fail")


def seed(session, expect):
    topic, silent = seed_monitoring(session, expect)
    seed_s3(session, expect, topic)
    seed_cloudtrail_and_cloudwatch(session, expect, topic, silent)
    seed_guardduty(session, expect)
    seed_securityhub(session, expect)
