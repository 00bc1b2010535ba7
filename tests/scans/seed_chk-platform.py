"""Moto seeding for the platform checks: rds, elb (ELBv2), lambda, ecr, eks.

`seed(session, expect)` creates one compliant and one non-compliant resource per check where moto
can express it and records the verdict each should get. Every name starts with `chk-platform-`.
Resources live in us-east-1 (eu-west-1 gets one ECR repository), inside the default VPC so no
EC2 resources are added for other groups to judge. Two things outside these services are
unavoidable: moto's CreateFunction and CreateCluster want an IAM role that exists (one role,
`chk-platform-lambda-role`), and an HTTPS/TLS listener wants a certificate that exists (one ACM
certificate for chk-platform.example.com).
"""

import io
import json
import zipfile

ACCOUNT = "123456789012"
PREFIX = "chk-platform-"
PASSWORD = "Chk-platform-pw1"


def seed(session, expect):
    region = "us-east-1"
    ec2 = session.client("ec2", region_name=region)
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"
    ]
    subnets.sort(key=lambda s: s["AvailabilityZone"])
    vpc = subnets[0]["VpcId"]
    sg = ec2.describe_security_groups(
        Filters=[
            {"Name": "group-name", "Values": ["default"]},
            {"Name": "vpc-id", "Values": [vpc]},
        ]
    )["SecurityGroups"][0]["GroupId"]
    iam = session.client("iam")
    role = iam.create_role(
        RoleName=PREFIX + "lambda-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": ["lambda.amazonaws.com", "eks.amazonaws.com"]},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]

    seed_rds(session.client("rds", region_name=region), subnets, role, expect)
    seed_elb(session, region, subnets, vpc, expect)
    seed_lambda(session.client("lambda", region_name=region), subnets, sg, role, expect)
    seed_ecr(session, expect)
    seed_eks(session.client("eks", region_name=region), subnets, role, expect)


def expect_all(expect, arn, verdicts):
    for check, status in verdicts.items():
        expect(check, arn, status)


def seed_rds(rds, subnets, role, expect):
    rds.create_db_subnet_group(
        DBSubnetGroupName=PREFIX + "subnets",
        DBSubnetGroupDescription="chk-platform",
        SubnetIds=[s["SubnetId"] for s in subnets[:2]],
    )
    base = dict(DBInstanceClass="db.t3.micro", AllocatedStorage=20, MasterUserPassword=PASSWORD)
    hardened = dict(
        StorageEncrypted=True,
        PubliclyAccessible=False,
        BackupRetentionPeriod=7,
        MultiAZ=True,
        DeletionProtection=True,
        AutoMinorVersionUpgrade=True,
        CopyTagsToSnapshot=True,
        DBSubnetGroupName=PREFIX + "subnets",
        MasterUsername="chkowner",
        # moto accepts but does not report MonitoringInterval, so Enhanced Monitoring always
        # reads as off (rds-enhanced-monitoring-enabled cannot pass in moto).
        MonitoringInterval=60,
        MonitoringRoleArn=role,
    )
    exposed = dict(
        StorageEncrypted=False,
        PubliclyAccessible=True,
        BackupRetentionPeriod=0,
        MultiAZ=False,
        DeletionProtection=False,
        AutoMinorVersionUpgrade=False,
        CopyTagsToSnapshot=False,
        MasterUsername="admin",
    )
    good_checks = {
        "rds-instance-storage-encrypted": "pass",
        "rds-instance-not-publicly-accessible": "pass",
        "rds-instance-backup-enabled": "pass",
        "rds-instance-multi-az": "pass",
        "rds-instance-deletion-protection": "pass",
        "rds-instance-auto-minor-version-upgrade": "pass",
        "rds-instance-iam-auth-enabled": "pass",
        "rds-instance-copy-tags-to-snapshot": "pass",
        "rds-instance-logs-to-cloudwatch": "pass",
        "rds-enhanced-monitoring-enabled": "fail",
        "rds-instance-in-vpc": "pass",
        "rds-instance-custom-admin-username": "pass",
        "rds-non-default-port": "pass",
    }
    bad_checks = {check: "fail" for check in good_checks}

    # PostgreSQL: one hardened, one exposed.
    arn = rds.create_db_instance(
        DBInstanceIdentifier=PREFIX + "pg-good",
        Engine="postgres",
        Port=5433,
        EnableIAMDatabaseAuthentication=True,
        EnableCloudwatchLogsExports=["postgresql", "upgrade"],
        **hardened,
        **base,
    )["DBInstance"]["DBInstanceArn"]
    expect_all(expect, arn, {**good_checks, "rds-postgresql-logs-to-cloudwatch": "pass"})
    pg_good = arn
    arn = rds.create_db_instance(
        DBInstanceIdentifier=PREFIX + "pg-bad", Engine="postgres", **exposed, **base
    )["DBInstance"]["DBInstanceArn"]
    expect_all(expect, arn, {**bad_checks, "rds-postgresql-logs-to-cloudwatch": "fail"})
    pg_bad = arn

    # MariaDB: the hardened one exports every log type RDS.9 expects.
    arn = rds.create_db_instance(
        DBInstanceIdentifier=PREFIX + "maria-good",
        Engine="mariadb",
        EngineVersion="10.11.6",  # moto has no default version for mariadb
        Port=3307,
        EnableIAMDatabaseAuthentication=True,
        EnableCloudwatchLogsExports=["audit", "error", "general", "slowquery"],
        **hardened,
        **base,
    )["DBInstance"]["DBInstanceArn"]
    expect_all(expect, arn, {**good_checks, "rds-mariadb-logs-to-cloudwatch": "pass"})
    arn = rds.create_db_instance(
        DBInstanceIdentifier=PREFIX + "maria-bad",
        Engine="mariadb",
        EngineVersion="10.11.6",
        EnableCloudwatchLogsExports=["error"],
        **exposed,
        **base,
    )["DBInstance"]["DBInstanceArn"]
    expect_all(expect, arn, {**bad_checks, "rds-mariadb-logs-to-cloudwatch": "fail"})

    # SQL Server: no IAM database authentication on this engine.
    arn = rds.create_db_instance(
        DBInstanceIdentifier=PREFIX + "mssql-good",
        Engine="sqlserver-ex",
        Port=1434,
        EnableCloudwatchLogsExports=["agent", "error"],
        **hardened,
        **base,
    )["DBInstance"]["DBInstanceArn"]
    expect("rds-sqlserver-logs-to-cloudwatch", arn, "pass")
    expect("rds-instance-logs-to-cloudwatch", arn, "pass")
    expect("rds-instance-iam-auth-enabled", arn, "not_applicable")
    arn = rds.create_db_instance(
        DBInstanceIdentifier=PREFIX + "mssql-bad", Engine="sqlserver-ex", **exposed, **base
    )["DBInstance"]["DBInstanceArn"]
    expect("rds-sqlserver-logs-to-cloudwatch", arn, "fail")
    expect("rds-non-default-port", arn, "fail")

    # Aurora MySQL: a hardened cluster with members in two zones, an exposed one with one member.
    cluster_good = {
        "rds-cluster-storage-encrypted": "pass",
        "rds-cluster-deletion-protection": "pass",
        "rds-cluster-iam-auth-enabled": "pass",
        "rds-cluster-multi-az": "pass",
        "rds-cluster-copy-tags-to-snapshot": "pass",
        "rds-cluster-auto-minor-version-upgrade": "pass",
        "rds-cluster-custom-admin-username": "pass",
        "rds-non-default-port": "pass",
    }
    cluster_bad = {check: "fail" for check in cluster_good}
    cluster_hardened = dict(
        StorageEncrypted=True,
        DeletionProtection=True,
        EnableIAMDatabaseAuthentication=True,
        CopyTagsToSnapshot=True,
        MasterUsername="chkowner",
        MasterUserPassword=PASSWORD,
    )
    cluster_exposed = dict(
        StorageEncrypted=False,
        DeletionProtection=False,
        EnableIAMDatabaseAuthentication=False,
        CopyTagsToSnapshot=False,
        MasterUsername="admin",
        MasterUserPassword=PASSWORD,
    )

    def members(cluster, engine, zones, auto_minor):
        for i, zone in enumerate(zones):
            rds.create_db_instance(
                DBInstanceIdentifier=f"{cluster}-{i}",
                DBClusterIdentifier=cluster,
                Engine=engine,
                DBInstanceClass="db.r5.large",
                AvailabilityZone=zone,
                AutoMinorVersionUpgrade=auto_minor,
            )

    name = PREFIX + "aurora-my-good"
    arn = rds.create_db_cluster(
        DBClusterIdentifier=name,
        Engine="aurora-mysql",
        Port=3308,
        BacktrackWindow=3600,
        EnableCloudwatchLogsExports=["audit", "error"],
        **cluster_hardened,
    )["DBCluster"]["DBClusterArn"]
    members(name, "aurora-mysql", ["us-east-1a", "us-east-1b"], True)
    expect_all(
        expect,
        arn,
        {
            **cluster_good,
            "rds-aurora-mysql-backtracking-enabled": "pass",
            "rds-aurora-mysql-audit-logs-to-cloudwatch": "pass",
        },
    )
    member = f"arn:aws:rds:us-east-1:{ACCOUNT}:db:{name}-0"
    expect("rds-instance-backup-enabled", member, "not_applicable")
    expect("rds-instance-multi-az", member, "not_applicable")
    aurora_good = name

    name = PREFIX + "aurora-my-bad"
    arn = rds.create_db_cluster(
        DBClusterIdentifier=name,
        Engine="aurora-mysql",
        AutoMinorVersionUpgrade=False,
        **cluster_exposed,
    )["DBCluster"]["DBClusterArn"]
    members(name, "aurora-mysql", ["us-east-1a"], False)
    expect_all(
        expect,
        arn,
        {
            **cluster_bad,
            "rds-aurora-mysql-backtracking-enabled": "fail",
            "rds-aurora-mysql-audit-logs-to-cloudwatch": "fail",
        },
    )
    aurora_bad = name

    # Aurora PostgreSQL: log export only.
    arn = rds.create_db_cluster(
        DBClusterIdentifier=PREFIX + "aurora-pg-good",
        Engine="aurora-postgresql",
        EnableCloudwatchLogsExports=["postgresql"],
        **cluster_hardened,
    )["DBCluster"]["DBClusterArn"]
    expect("rds-aurora-postgresql-logs-to-cloudwatch", arn, "pass")
    arn = rds.create_db_cluster(
        DBClusterIdentifier=PREFIX + "aurora-pg-bad",
        Engine="aurora-postgresql",
        **cluster_exposed,
    )["DBCluster"]["DBClusterArn"]
    expect("rds-aurora-postgresql-logs-to-cloudwatch", arn, "fail")

    # Multi-AZ DB clusters of RDS for PostgreSQL and MySQL: copying tags to snapshots.
    multi_az = dict(DBClusterInstanceClass="db.m5d.large", AllocatedStorage=100, Iops=1000,
                    StorageType="io1")
    # moto refuses IAM authentication on Multi-AZ DB clusters.
    multi_az_hardened = {
        k: v for k, v in cluster_hardened.items() if k != "EnableIAMDatabaseAuthentication"
    }
    arn = rds.create_db_cluster(
        DBClusterIdentifier=PREFIX + "pg-cluster-good",
        Engine="postgres",
        **multi_az,
        **multi_az_hardened,
    )["DBCluster"]["DBClusterArn"]
    expect("rds-postgresql-cluster-copy-tags-to-snapshot", arn, "pass")
    arn = rds.create_db_cluster(
        DBClusterIdentifier=PREFIX + "pg-cluster-bad",
        Engine="postgres",
        **multi_az,
        **cluster_exposed,
    )["DBCluster"]["DBClusterArn"]
    expect("rds-postgresql-cluster-copy-tags-to-snapshot", arn, "fail")
    arn = rds.create_db_cluster(
        DBClusterIdentifier=PREFIX + "my-cluster-good",
        Engine="mysql",
        **multi_az,
        **multi_az_hardened,
    )["DBCluster"]["DBClusterArn"]
    expect("rds-mysql-cluster-copy-tags-to-snapshot", arn, "pass")
    arn = rds.create_db_cluster(
        DBClusterIdentifier=PREFIX + "my-cluster-bad",
        Engine="mysql",
        **multi_az,
        **cluster_exposed,
    )["DBCluster"]["DBClusterArn"]
    expect("rds-mysql-cluster-copy-tags-to-snapshot", arn, "fail")

    # Snapshots: encrypted and private, unencrypted and restorable by everyone.
    good = rds.create_db_snapshot(
        DBSnapshotIdentifier=PREFIX + "snap-good", DBInstanceIdentifier=pg_good.split(":")[-1]
    )["DBSnapshot"]["DBSnapshotArn"]
    rds.modify_db_snapshot_attribute(
        DBSnapshotIdentifier=PREFIX + "snap-good",
        AttributeName="restore",
        ValuesToAdd=["210987654321"],
    )
    expect("rds-snapshot-encrypted", good, "pass")
    expect("rds-snapshot-not-public", good, "pass")
    bad = rds.create_db_snapshot(
        DBSnapshotIdentifier=PREFIX + "snap-bad", DBInstanceIdentifier=pg_bad.split(":")[-1]
    )["DBSnapshot"]["DBSnapshotArn"]
    rds.modify_db_snapshot_attribute(
        DBSnapshotIdentifier=PREFIX + "snap-bad", AttributeName="restore", ValuesToAdd=["all"]
    )
    expect("rds-snapshot-encrypted", bad, "fail")
    expect("rds-snapshot-not-public", bad, "fail")
    good = rds.create_db_cluster_snapshot(
        DBClusterSnapshotIdentifier=PREFIX + "csnap-good", DBClusterIdentifier=aurora_good
    )["DBClusterSnapshot"]["DBClusterSnapshotArn"]
    expect("rds-snapshot-encrypted", good, "pass")
    expect("rds-snapshot-not-public", good, "pass")
    bad = rds.create_db_cluster_snapshot(
        DBClusterSnapshotIdentifier=PREFIX + "csnap-bad", DBClusterIdentifier=aurora_bad
    )["DBClusterSnapshot"]["DBClusterSnapshotArn"]
    rds.modify_db_cluster_snapshot_attribute(
        DBClusterSnapshotIdentifier=PREFIX + "csnap-bad",
        AttributeName="restore",
        ValuesToAdd=["all"],
    )
    expect("rds-snapshot-encrypted", bad, "fail")
    expect("rds-snapshot-not-public", bad, "fail")

    # Event subscriptions (region-level verdicts): instance events all categories, parameter
    # group changes; cluster events without maintenance; nothing for security groups. The topic
    # is not created: moto does not check it, and SNS belongs to another group.
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:{PREFIX}rds-events"
    for name, source, categories in [
        ("es-instances", "db-instance", []),
        ("es-params", "db-parameter-group", ["configuration change"]),
        ("es-clusters", "db-cluster", ["failure"]),
    ]:
        rds.create_event_subscription(
            SubscriptionName=PREFIX + name,
            SnsTopicArn=topic,
            SourceType=source,
            EventCategories=categories,
            Enabled=True,
        )
    region_es = f"arn:aws:rds:us-east-1:{ACCOUNT}:es:*"
    expect("rds-instance-event-subscription", region_es, "pass")
    expect("rds-parameter-group-event-subscription", region_es, "pass")
    expect("rds-cluster-event-subscription", region_es, "fail")
    expect("rds-security-group-event-subscription", region_es, "fail")

    # Proxies.
    for name, tls in [("proxy-good", True), ("proxy-bad", False)]:
        arn = rds.create_db_proxy(
            DBProxyName=PREFIX + name,
            EngineFamily="MYSQL",
            Auth=[
                {
                    "AuthScheme": "SECRETS",
                    "SecretArn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{PREFIX}db",
                    "IAMAuth": "DISABLED",
                }
            ],
            RoleArn=role,
            VpcSubnetIds=[s["SubnetId"] for s in subnets[:2]],
            RequireTLS=tls,
        )["DBProxy"]["DBProxyArn"]
        expect("rds-proxy-require-tls", arn, "pass" if tls else "fail")


def seed_elb(session, region, subnets, vpc, expect):
    elb = session.client("elbv2", region_name=region)
    cert = session.client("acm", region_name=region).request_certificate(
        DomainName="chk-platform.example.com"
    )["CertificateArn"]
    two_zones = [s["SubnetId"] for s in subnets[:2]]

    tg = elb.create_target_group(Name=PREFIX + "tg", Protocol="HTTP", Port=80, VpcId=vpc)[
        "TargetGroups"
    ][0]["TargetGroupArn"]
    tg_tcp = elb.create_target_group(
        Name=PREFIX + "tg-tcp", Protocol="TCP", Port=443, VpcId=vpc
    )["TargetGroups"][0]["TargetGroupArn"]

    # Hardened ALB: two zones, every attribute set, HTTPS with a TLS 1.2+ policy, HTTP redirects.
    alb = elb.create_load_balancer(Name=PREFIX + "alb-good", Subnets=two_zones, Type="application")[
        "LoadBalancers"
    ][0]["LoadBalancerArn"]
    elb.modify_load_balancer_attributes(
        LoadBalancerArn=alb,
        Attributes=[
            {"Key": "deletion_protection.enabled", "Value": "true"},
            {"Key": "access_logs.s3.enabled", "Value": "true"},
            {"Key": "access_logs.s3.bucket", "Value": PREFIX + "alb-logs"},
            {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
            {"Key": "routing.http.desync_mitigation_mode", "Value": "strictest"},
        ],
    )
    https = elb.create_listener(
        LoadBalancerArn=alb,
        Protocol="HTTPS",
        Port=443,
        SslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06",
        Certificates=[{"CertificateArn": cert}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )["Listeners"][0]["ListenerArn"]
    elb.create_listener(
        LoadBalancerArn=alb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[
            {
                "Type": "redirect",
                "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
            }
        ],
    )
    expect_all(
        expect,
        alb,
        {
            "elb-v2-strong-tls-policy": "pass",
            "elb-deletion-protection-enabled": "pass",
            "elb-access-logging-enabled": "pass",
            "elb-alb-drops-invalid-headers": "pass",
            "elb-alb-http-redirects-to-https": "pass",
            "elb-v2-multi-az": "pass",
            "elb-alb-desync-mitigation": "pass",
        },
    )
    expect("elbv2-listener-encrypted-protocol", https, "pass")

    # Exposed ALB: one zone, default attributes (moto reports no desync mode), HTTP forwarding
    # in clear text, HTTPS with a policy that still allows TLS 1.0.
    alb = elb.create_load_balancer(
        Name=PREFIX + "alb-bad", Subnets=two_zones[:1], Type="application"
    )["LoadBalancers"][0]["LoadBalancerArn"]
    http = elb.create_listener(
        LoadBalancerArn=alb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )["Listeners"][0]["ListenerArn"]
    elb.create_listener(
        LoadBalancerArn=alb,
        Protocol="HTTPS",
        Port=443,
        SslPolicy="ELBSecurityPolicy-2016-08",
        Certificates=[{"CertificateArn": cert}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )
    expect_all(
        expect,
        alb,
        {
            "elb-v2-strong-tls-policy": "fail",
            "elb-deletion-protection-enabled": "fail",
            "elb-access-logging-enabled": "fail",
            "elb-alb-drops-invalid-headers": "fail",
            "elb-alb-http-redirects-to-https": "fail",
            "elb-v2-multi-az": "fail",
            "elb-alb-desync-mitigation": "fail",
        },
    )
    expect("elbv2-listener-encrypted-protocol", http, "fail")

    # NLB: a TLS listener (encrypted) with a weak policy, and a plain TCP listener.
    nlb = elb.create_load_balancer(Name=PREFIX + "nlb", Subnets=two_zones, Type="network")[
        "LoadBalancers"
    ][0]["LoadBalancerArn"]
    tls = elb.create_listener(
        LoadBalancerArn=nlb,
        Protocol="TLS",
        Port=443,
        SslPolicy="ELBSecurityPolicy-TLS-1-1-2017-01",
        Certificates=[{"CertificateArn": cert}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_tcp}],
    )["Listeners"][0]["ListenerArn"]
    tcp = elb.create_listener(
        LoadBalancerArn=nlb,
        Protocol="TCP",
        Port=8443,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_tcp}],
    )["Listeners"][0]["ListenerArn"]
    expect("elbv2-listener-encrypted-protocol", tls, "pass")
    expect("elbv2-listener-encrypted-protocol", tcp, "fail")
    expect("elb-v2-strong-tls-policy", nlb, "fail")
    expect("elb-v2-multi-az", nlb, "pass")
    expect("elb-deletion-protection-enabled", nlb, "fail")


def seed_lambda(lam, subnets, sg, role, expect):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return 1\n")
    code = {"ZipFile": buf.getvalue()}

    good = lam.create_function(
        FunctionName=PREFIX + "fn-good",
        Runtime="python3.13",
        Role=role,
        Handler="index.handler",
        Code=code,
        VpcConfig={"SubnetIds": [s["SubnetId"] for s in subnets[:2]], "SecurityGroupIds": [sg]},
    )["FunctionArn"]
    lam.add_permission(
        FunctionName=PREFIX + "fn-good",
        StatementId="s3-from-this-account",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceAccount=ACCOUNT,
    )
    lam.create_function_url_config(FunctionName=PREFIX + "fn-good", AuthType="AWS_IAM")
    expect_all(
        expect,
        good,
        {
            "lambda-function-not-public": "pass",
            "lambda-function-supported-runtime": "pass",
            "lambda-function-in-vpc": "pass",
            "lambda-function-url-not-public": "pass",
        },
    )

    bad = lam.create_function(
        FunctionName=PREFIX + "fn-bad",
        Runtime="python3.8",
        Role=role,
        Handler="index.handler",
        Code=code,
    )["FunctionArn"]
    lam.add_permission(
        FunctionName=PREFIX + "fn-bad",
        StatementId="anyone",
        Action="lambda:InvokeFunction",
        Principal="*",
    )
    lam.create_function_url_config(FunctionName=PREFIX + "fn-bad", AuthType="NONE")
    expect_all(
        expect,
        bad,
        {
            "lambda-function-not-public": "fail",
            "lambda-function-supported-runtime": "fail",
            "lambda-function-in-vpc": "fail",
            "lambda-function-url-not-public": "fail",
        },
    )

    # No policy and no URL at all: nothing grants public access.
    bare = lam.create_function(
        FunctionName=PREFIX + "fn-bare",
        Runtime="nodejs22.x",
        Role=role,
        Handler="index.handler",
        Code=code,
    )["FunctionArn"]
    expect("lambda-function-not-public", bare, "pass")
    expect("lambda-function-url-not-public", bare, "pass")


def seed_ecr(session, expect):
    ecr = session.client("ecr", region_name="us-east-1")
    good = ecr.create_repository(
        repositoryName=PREFIX + "repo-good",
        imageTagMutability="IMMUTABLE",
        imageScanningConfiguration={"scanOnPush": True},
    )["repository"]["repositoryArn"]
    ecr.put_lifecycle_policy(
        repositoryName=PREFIX + "repo-good",
        lifecyclePolicyText=json.dumps(
            {
                "rules": [
                    {
                        "rulePriority": 1,
                        "selection": {
                            "tagStatus": "untagged",
                            "countType": "sinceImagePushed",
                            "countUnit": "days",
                            "countNumber": 14,
                        },
                        "action": {"type": "expire"},
                    }
                ]
            }
        ),
    )
    ecr.set_repository_policy(
        repositoryName=PREFIX + "repo-good",
        policyText=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "pull-from-partner",
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
                        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                    }
                ],
            }
        ),
    )
    expect_all(
        expect,
        good,
        {
            "ecr-image-scanning-enabled": "pass",
            "ecr-tag-immutability": "pass",
            "ecr-lifecycle-policy": "pass",
            "ecr-repository-not-public": "pass",
        },
    )

    bad = ecr.create_repository(repositoryName=PREFIX + "repo-bad")["repository"]["repositoryArn"]
    ecr.set_repository_policy(
        repositoryName=PREFIX + "repo-bad",
        policyText=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "pull-for-anyone",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                    }
                ],
            }
        ),
    )
    expect_all(
        expect,
        bad,
        {
            "ecr-image-scanning-enabled": "fail",
            "ecr-tag-immutability": "fail",
            "ecr-lifecycle-policy": "fail",
            "ecr-repository-not-public": "fail",
        },
    )

    # eu-west-1: a repository without a policy (nothing public) and no lifecycle policy.
    ecr_eu = session.client("ecr", region_name="eu-west-1")
    eu = ecr_eu.create_repository(repositoryName=PREFIX + "repo-eu")["repository"][
        "repositoryArn"
    ]
    expect("ecr-repository-not-public", eu, "pass")
    expect("ecr-lifecycle-policy", eu, "fail")


def seed_eks(eks, subnets, role, expect):
    two_zones = [s["SubnetId"] for s in subnets[:2]]
    # A version newer than any end date the check knows stays in standard support.
    good = eks.create_cluster(
        name=PREFIX + "eks-good",
        version="1.35",
        roleArn=role,
        resourcesVpcConfig={
            "subnetIds": two_zones,
            "endpointPublicAccess": False,
            "endpointPrivateAccess": True,
        },
        logging={"clusterLogging": [{"types": ["api", "audit"], "enabled": True}]},
        encryptionConfig=[
            {
                "resources": ["secrets"],
                "provider": {"keyArn": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/chk-platform"},
            }
        ],
    )["cluster"]["arn"]
    expect_all(
        expect,
        good,
        {
            "eks-endpoint-not-public": "pass",
            "eks-audit-logging": "pass",
            "eks-secrets-encrypted": "pass",
            "eks-cluster-supported-version": "pass",
        },
    )
    # Public endpoint limited to one range: passes the endpoint check.
    limited = eks.create_cluster(
        name=PREFIX + "eks-limited",
        version="1.35",
        roleArn=role,
        resourcesVpcConfig={
            "subnetIds": two_zones,
            "endpointPublicAccess": True,
            "publicAccessCidrs": ["203.0.113.0/24"],
        },
    )["cluster"]["arn"]
    expect("eks-endpoint-not-public", limited, "pass")
    bad = eks.create_cluster(
        name=PREFIX + "eks-bad",
        version="1.27",
        roleArn=role,
        resourcesVpcConfig={
            "subnetIds": two_zones,
            "endpointPublicAccess": True,
            "publicAccessCidrs": ["0.0.0.0/0"],
        },
        logging={"clusterLogging": [{"types": ["api"], "enabled": True}]},
    )["cluster"]["arn"]
    expect_all(
        expect,
        bad,
        {
            "eks-endpoint-not-public": "fail",
            "eks-audit-logging": "fail",
            "eks-secrets-encrypted": "fail",
            "eks-cluster-supported-version": "fail",
        },
    )
