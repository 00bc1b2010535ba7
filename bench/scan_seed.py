#!/usr/bin/env python3
"""Seeds a moto server with a large account for the scan benchmark: about N resources spread
over two regions and a dozen services (security groups, volumes, snapshots, buckets, IAM users
and roles, queues, topics, tables, keys, secrets, log groups). Prints how many it made.

    AWS_ENDPOINT_URL=http://127.0.0.1:5000 python3 bench/scan_seed.py 2000
"""
import json
import sys

import boto3

REGIONS = ("us-east-1", "eu-west-1")


def main():
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    # Per region and service a share of the total; IAM and S3 are account-wide.
    regional = ["sg", "volume", "snapshot", "queue", "topic", "table", "key", "secret", "loggroup"]
    share = -(-total // (len(regional) * len(REGIONS) + 3))
    made = {}
    for region in REGIONS:
        ec2 = boto3.client("ec2", region_name=region)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        for i in range(share):
            sg = ec2.create_security_group(GroupName=f"bench-{i}", Description="bench", VpcId=vpc)["GroupId"]
            if i % 3 == 0:
                ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
                    "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        volumes = [ec2.create_volume(AvailabilityZone=f"{region}a", Size=1, Encrypted=i % 2 == 0)["VolumeId"]
                   for i in range(share)]
        for i in range(share):
            ec2.create_snapshot(VolumeId=volumes[i % len(volumes)])
        sqs = boto3.client("sqs", region_name=region)
        sns = boto3.client("sns", region_name=region)
        ddb = boto3.client("dynamodb", region_name=region)
        kms = boto3.client("kms", region_name=region)
        sm = boto3.client("secretsmanager", region_name=region)
        logs = boto3.client("logs", region_name=region)
        for i in range(share):
            sqs.create_queue(QueueName=f"bench-{i}")
            sns.create_topic(Name=f"bench-{i}")
            ddb.create_table(TableName=f"bench-{i}", BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
            key = kms.create_key()["KeyMetadata"]["KeyId"]
            if i % 2 == 0:
                kms.enable_key_rotation(KeyId=key)
            sm.create_secret(Name=f"bench-{i}", SecretString="x")
            logs.create_log_group(logGroupName=f"bench-{i}")
        for kind in regional:
            made[kind] = made.get(kind, 0) + share
    s3 = boto3.client("s3", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    for i in range(share):
        s3.create_bucket(Bucket=f"bench-bucket-{i}")
        if i % 2 == 0:
            s3.put_bucket_versioning(Bucket=f"bench-bucket-{i}", VersioningConfiguration={"Status": "Enabled"})
        iam.create_user(UserName=f"bench-user-{i}")
        iam.create_role(RoleName=f"bench-role-{i}", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                   "Action": "sts:AssumeRole"}]}))
    made.update({"bucket": share, "user": share, "role": share})
    print(json.dumps({"resources": sum(made.values()), "by_kind": made}))


if __name__ == "__main__":
    main()
