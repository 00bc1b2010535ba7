"""Moto seeding for the data-store checks: dynamodb, sns, sqs, efs, elasticache, backup, cloudfront.

`seed(session, expect)` creates one compliant and one non-compliant resource per check where moto
can express it and records the verdict each should get. Every name starts with `chk-data-`.
"""

import json

ACCOUNT = "123456789012"
PREFIX = "chk-data-"


def seed(session, expect):
    # Regional resources live in us-east-1; eu-west-1 stays empty (backup-plan-exists fails there).
    region = "us-east-1"
    seed_dynamodb(session.client("dynamodb", region_name=region), expect)
    seed_sqs(session.client("sqs", region_name=region), expect)
    seed_sns(session, region, expect)
    seed_efs(session.client("efs", region_name=region), expect)
    seed_elasticache(session, region, expect)
    seed_backup(session, expect)
    seed_cloudfront(session, expect)


def seed_dynamodb(ddb, expect):
    common = dict(
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    good = ddb.create_table(
        TableName=PREFIX + "table-good",
        SSESpecification={"Enabled": True, "SSEType": "KMS"},
        DeletionProtectionEnabled=True,
        **common,
    )["TableDescription"]["TableArn"]
    ddb.update_continuous_backups(
        TableName=PREFIX + "table-good",
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    bad = ddb.create_table(TableName=PREFIX + "table-bad", **common)["TableDescription"]["TableArn"]
    for check in (
        "dynamodb-table-pitr-enabled",
        "dynamodb-table-encrypted-kms",
        "dynamodb-table-deletion-protection",
    ):
        expect(check, good, "pass")
        expect(check, bad, "fail")


def open_policy(resource, action):
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": action, "Resource": resource}],
        }
    )


def seed_sqs(sqs, expect):
    def arn_of(url):
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    kms = sqs.create_queue(QueueName=PREFIX + "queue-kms", Attributes={"KmsMasterKeyId": "alias/aws/sqs"})["QueueUrl"]
    kms_arn = arn_of(kms)
    # Open to everyone, but only for messages sent on behalf of one SNS topic.
    restricted = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "sqs:SendMessage",
                "Resource": kms_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:{PREFIX}topic-good"}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=kms, Attributes={"Policy": json.dumps(restricted)})
    # SSE-SQS is on by default for new queues.
    sse_sqs_arn = arn_of(sqs.create_queue(QueueName=PREFIX + "queue-sse-sqs")["QueueUrl"])
    plain = sqs.create_queue(QueueName=PREFIX + "queue-plain", Attributes={"SqsManagedSseEnabled": "false"})["QueueUrl"]
    plain_arn = arn_of(plain)
    sqs.set_queue_attributes(QueueUrl=plain, Attributes={"Policy": open_policy(plain_arn, "sqs:*")})

    expect("sqs-queue-encrypted", kms_arn, "pass")
    expect("sqs-queue-encrypted", sse_sqs_arn, "pass")
    expect("sqs-queue-encrypted", plain_arn, "fail")
    expect("sqs-queue-not-public", kms_arn, "pass")
    expect("sqs-queue-not-public", sse_sqs_arn, "pass")
    expect("sqs-queue-not-public", plain_arn, "fail")


def seed_sns(session, region, expect):
    sns = session.client("sns", region_name=region)
    # Keeps moto's default policy: everyone, but only with AWS:SourceOwner = this account.
    good = sns.create_topic(Name=PREFIX + "topic-good", Attributes={"KmsMasterKeyId": "alias/aws/sns"})["TopicArn"]
    bad = sns.create_topic(Name=PREFIX + "topic-bad")["TopicArn"]
    sns.set_topic_attributes(TopicArn=bad, AttributeName="Policy", AttributeValue=open_policy(bad, "sns:Publish"))
    sns.subscribe(TopicArn=bad, Protocol="sqs", Endpoint=f"arn:aws:sqs:{region}:{ACCOUNT}:{PREFIX}queue-kms")

    expect("sns-topic-encrypted-kms", good, "pass")
    expect("sns-topic-encrypted-kms", bad, "fail")
    expect("sns-topic-not-public", good, "pass")
    expect("sns-topic-not-public", bad, "fail")
    # moto accepts <Protocol>SuccessFeedbackRoleArn in SetTopicAttributes but never returns it from
    # GetTopicAttributes, so only the non-compliant case (an SQS subscription, no role) is seeded.
    expect("sns-topic-delivery-status-logging", bad, "fail")


def seed_efs(efs, expect):
    def create(name, **kw):
        return efs.create_file_system(CreationToken=PREFIX + name, Tags=[{"Key": "Name", "Value": PREFIX + name}], **kw)

    good = create("fs-good", Encrypted=True, Backup=True)
    efs.put_file_system_policy(
        FileSystemId=good["FileSystemId"],
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                        "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                        "Resource": good["FileSystemArn"],
                    }
                ],
            }
        ),
    )
    bare = create("fs-bare")  # unencrypted, no backup policy, no file system policy
    open_fs = create("fs-open", Encrypted=True)
    efs.put_file_system_policy(
        FileSystemId=open_fs["FileSystemId"],
        Policy=open_policy(open_fs["FileSystemArn"], ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]),
    )

    for check in ("efs-file-system-encrypted", "efs-filesystem-encryption-at-rest"):
        expect(check, good["FileSystemArn"], "pass")
        expect(check, open_fs["FileSystemArn"], "pass")
        expect(check, bare["FileSystemArn"], "fail")
    expect("efs-automatic-backups-enabled", good["FileSystemArn"], "pass")
    expect("efs-automatic-backups-enabled", bare["FileSystemArn"], "fail")
    expect("efs-file-system-policy-not-open", good["FileSystemArn"], "pass")
    expect("efs-file-system-policy-not-open", bare["FileSystemArn"], "fail")
    expect("efs-file-system-policy-not-open", open_fs["FileSystemArn"], "fail")

    scoped = efs.create_access_point(
        ClientToken=PREFIX + "ap-scoped",
        FileSystemId=good["FileSystemId"],
        PosixUser={"Uid": 1000, "Gid": 1000},
        RootDirectory={"Path": "/app"},
    )["AccessPointArn"]
    unscoped = efs.create_access_point(ClientToken=PREFIX + "ap-unscoped", FileSystemId=good["FileSystemId"])[
        "AccessPointArn"
    ]
    for check in ("efs-access-point-root-directory", "efs-access-point-user-identity"):
        expect(check, scoped, "pass")
        expect(check, unscoped, "fail")


def seed_elasticache(session, region, expect):
    ec = session.client("elasticache", region_name=region)
    # The default VPC's subnets, so no network of our own changes the EC2 group's verdicts.
    subnets = session.client("ec2", region_name=region).describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}]
    )["Subnets"]
    ec.create_cache_subnet_group(
        CacheSubnetGroupName=PREFIX + "subnets",
        CacheSubnetGroupDescription="chk-data",
        SubnetIds=[s["SubnetId"] for s in subnets[:2]],
    )
    good = ec.create_cache_cluster(
        CacheClusterId=PREFIX + "redis-good",
        Engine="redis",
        EngineVersion="7.1",
        CacheNodeType="cache.t3.micro",
        NumCacheNodes=1,
        SnapshotRetentionLimit=3,
        AutoMinorVersionUpgrade=True,
        CacheSubnetGroupName=PREFIX + "subnets",
    )["CacheCluster"]["ARN"]
    bad = ec.create_cache_cluster(
        CacheClusterId=PREFIX + "redis-bad",
        Engine="redis",
        EngineVersion="7.1",
        CacheNodeType="cache.t3.micro",
        NumCacheNodes=1,
        SnapshotRetentionLimit=0,
        AutoMinorVersionUpgrade=False,
        CacheSubnetGroupName="default",
    )["CacheCluster"]["ARN"]
    for check in (
        "elasticache-redis-automatic-backups",
        "elasticache-auto-minor-version-upgrade",
        "elasticache-not-default-subnet-group",
    ):
        expect(check, good, "pass")
        expect(check, bad, "fail")

    group_good = ec.create_replication_group(
        ReplicationGroupId=PREFIX + "rg-good",
        ReplicationGroupDescription="chk-data",
        Engine="redis",
        EngineVersion="5.0.6",
        CacheNodeType="cache.t3.micro",
        NumCacheClusters=2,
        AutomaticFailoverEnabled=True,
        AtRestEncryptionEnabled=True,
        TransitEncryptionEnabled=True,
        AuthToken="chk-data-auth-token-0123456789",
    )["ReplicationGroup"]["ARN"]
    group_bad = ec.create_replication_group(
        ReplicationGroupId=PREFIX + "rg-bad",
        ReplicationGroupDescription="chk-data",
        Engine="redis",
        EngineVersion="5.0.6",
        CacheNodeType="cache.t3.micro",
        NumCacheClusters=1,
        AutomaticFailoverEnabled=False,
        AtRestEncryptionEnabled=False,
        TransitEncryptionEnabled=False,
    )["ReplicationGroup"]["ARN"]
    # moto does not list a group's member clusters in DescribeCacheClusters, so the engine
    # version is unknown to the AUTH check, which then judges AuthTokenEnabled alone.
    for check in (
        "elasticache-replication-group-encrypted-at-rest",
        "elasticache-replication-group-encrypted-in-transit",
        "elasticache-replication-group-auto-failover",
        "elasticache-redis-auth-enabled",
    ):
        expect(check, group_good, "pass")
        expect(check, group_bad, "fail")


def seed_backup(session, expect):
    backup = session.client("backup", region_name="us-east-1")
    backup.create_backup_plan(
        BackupPlan={
            "BackupPlanName": PREFIX + "plan",
            "Rules": [
                {
                    "RuleName": "daily",
                    "TargetBackupVaultName": PREFIX + "vault-kms",
                    "ScheduleExpression": "cron(0 5 * * ? *)",
                }
            ],
        }
    )
    expect("backup-plan-exists", f"arn:aws:backup:us-east-1:{ACCOUNT}:backup-plan:*", "pass")
    expect("backup-plan-exists", f"arn:aws:backup:eu-west-1:{ACCOUNT}:backup-plan:*", "fail")

    kms = session.client("kms", region_name="us-east-1").create_key(Description=PREFIX + "backup")["KeyMetadata"]["Arn"]
    with_key = backup.create_backup_vault(BackupVaultName=PREFIX + "vault-kms", EncryptionKeyArn=kms)["BackupVaultArn"]
    # AWS always assigns a key (aws/backup by default); moto leaves it unset when none is given.
    without_key = backup.create_backup_vault(BackupVaultName=PREFIX + "vault-nokey")["BackupVaultArn"]
    expect("backup-vault-kms-encrypted", with_key, "pass")
    expect("backup-vault-kms-encrypted", without_key, "fail")
    # moto has no ListRecoveryPointsByBackupVault (404) nor any way to create recovery points.
    expect("backup-recovery-point-encrypted", with_key, "error")
    expect("backup-recovery-point-encrypted", without_key, "error")


CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"


def seed_cloudfront(session, expect):
    cf = session.client("cloudfront", region_name="us-east-1")

    def distribution(name, origins, default_behavior, **extra):
        config = {
            "CallerReference": PREFIX + name,
            "Comment": PREFIX + name,
            "Enabled": True,
            "Origins": {"Quantity": len(origins), "Items": origins},
            "DefaultCacheBehavior": {"CachePolicyId": CACHING_OPTIMIZED, **default_behavior},
            **extra,
        }
        return cf.create_distribution(DistributionConfig=config)["Distribution"]

    def custom(origin_id, domain, policy, protocols):
        return {
            "Id": origin_id,
            "DomainName": domain,
            "CustomOriginConfig": {
                "HTTPPort": 80,
                "HTTPSPort": 443,
                "OriginProtocolPolicy": policy,
                "OriginSslProtocols": {"Quantity": len(protocols), "Items": protocols},
            },
        }

    good = distribution(
        "good",
        [
            custom("web", "origin.chk-data.example.com", "https-only", ["TLSv1.2"]),
            custom("web-b", "origin-b.chk-data.example.com", "https-only", ["TLSv1.2"]),
        ],
        {"TargetOriginId": "web", "ViewerProtocolPolicy": "redirect-to-https", "FieldLevelEncryptionId": "chk-data-fle"},
        CacheBehaviors={
            "Quantity": 1,
            "Items": [
                {
                    "PathPattern": "/api/*",
                    "TargetOriginId": "web",
                    "ViewerProtocolPolicy": "https-only",
                    "CachePolicyId": CACHING_OPTIMIZED,
                }
            ],
        },
        OriginGroups={
            "Quantity": 1,
            "Items": [
                {
                    "Id": "failover",
                    "FailoverCriteria": {"StatusCodes": {"Quantity": 1, "Items": [503]}},
                    "Members": {"Quantity": 2, "Items": [{"OriginId": "web"}, {"OriginId": "web-b"}]},
                }
            ],
        },
        DefaultRootObject="index.html",
        Logging={"Enabled": True, "IncludeCookies": False, "Bucket": "chk-data-logs.s3.amazonaws.com", "Prefix": "cf/"},
        ViewerCertificate={
            "ACMCertificateArn": f"arn:aws:acm:us-east-1:{ACCOUNT}:certificate/chk-data-good",
            "SSLSupportMethod": "sni-only",
            "MinimumProtocolVersion": "TLSv1.2_2021",
        },
        Restrictions={"GeoRestriction": {"RestrictionType": "whitelist", "Quantity": 1, "Items": ["DE"]}},
        WebACLId=f"arn:aws:wafv2:us-east-1:{ACCOUNT}:global/webacl/chk-data/1",
    )["ARN"]

    bad = distribution(
        "bad",
        [
            custom("web", "origin.chk-data.example.com", "http-only", ["SSLv3", "TLSv1"]),
            {"Id": "s3", "DomainName": "chk-data-bucket.s3.us-east-1.amazonaws.com", "S3OriginConfig": {"OriginAccessIdentity": ""}},
            custom("fn", "chk-data.lambda-url.us-east-1.on.aws", "https-only", ["TLSv1.2"]),
        ],
        {"TargetOriginId": "web", "ViewerProtocolPolicy": "allow-all"},
    )["ARN"]

    # A custom certificate with an old TLS policy, match-viewer behind HTTPS-only viewers, and
    # standard logging v2 through a CloudWatch Logs delivery instead of the legacy S3 setting.
    old_tls = distribution(
        "old-tls",
        [custom("web", "origin.chk-data.example.com", "match-viewer", ["TLSv1.2"])],
        {"TargetOriginId": "web", "ViewerProtocolPolicy": "https-only"},
        ViewerCertificate={
            "ACMCertificateArn": f"arn:aws:acm:us-east-1:{ACCOUNT}:certificate/chk-data-old",
            "SSLSupportMethod": "sni-only",
            "MinimumProtocolVersion": "TLSv1_2016",
        },
    )["ARN"]
    logs = session.client("logs", region_name="us-east-1")
    logs.put_delivery_source(name=PREFIX + "cf-old-tls", resourceArn=old_tls, logType="ACCESS_LOGS")
    destination = logs.put_delivery_destination(
        name=PREFIX + "cf-logs",
        deliveryDestinationConfiguration={"destinationResourceArn": "arn:aws:s3:::chk-data-logs"},
    )["deliveryDestination"]["arn"]
    logs.create_delivery(deliverySourceName=PREFIX + "cf-old-tls", deliveryDestinationArn=destination)

    vip = distribution(
        "vip",
        [custom("web", "origin.chk-data.example.com", "match-viewer", ["TLSv1.2"])],
        {"TargetOriginId": "web", "ViewerProtocolPolicy": "allow-all"},
        ViewerCertificate={
            "ACMCertificateArn": f"arn:aws:acm:us-east-1:{ACCOUNT}:certificate/chk-data-vip",
            "SSLSupportMethod": "vip",
            "MinimumProtocolVersion": "TLSv1.2_2021",
        },
    )["ARN"]

    for check in (
        "cloudfront-viewer-https-required",
        "cloudfront-origin-traffic-encrypted",
        "cloudfront-access-logging",
        "cloudfront-default-root-object",
        "cloudfront-waf-enabled",
        "cloudfront-field-level-encryption",
        "cloudfront-geo-restriction",
        "cloudfront-origin-failover",
        "cloudfront-custom-certificate",
        "cloudfront-no-deprecated-origin-ssl",
    ):
        expect(check, good, "pass")
        expect(check, bad, "fail")
    expect("cloudfront-recommended-tls-policy", good, "pass")
    expect("cloudfront-recommended-tls-policy", old_tls, "fail")
    expect("cloudfront-recommended-tls-policy", bad, "not_applicable")
    expect("cloudfront-recommended-tls-policy", vip, "not_applicable")
    expect("cloudfront-sni-https", good, "pass")
    expect("cloudfront-sni-https", vip, "fail")
    expect("cloudfront-sni-https", bad, "not_applicable")
    expect("cloudfront-origin-traffic-encrypted", old_tls, "pass")
    expect("cloudfront-origin-traffic-encrypted", vip, "fail")
    expect("cloudfront-access-logging", old_tls, "pass")
    # moto drops OriginAccessControlId from origins, so only origins without OAC can be seeded.
    expect("cloudfront-s3-origin-access-control", bad, "fail")
    expect("cloudfront-s3-origin-access-control", good, "not_applicable")
    expect("cloudfront-lambda-url-origin-access-control", bad, "fail")
    expect("cloudfront-lambda-url-origin-access-control", good, "not_applicable")
