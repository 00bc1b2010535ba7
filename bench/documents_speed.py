#!/usr/bin/env python3
"""Analysis time and peak memory of a large template and a long PDF
(examples/analyse_document, library only, no database).

    python3 bench/documents_speed.py [--repeat N] [--profile debug] [--binary PATH]

Generates target/bench-docs/template-1000.yaml (1,000 CloudFormation resources of the types
design reviews meet most) and target/bench-docs/design-50-pages.pdf (a 50-page design document
with security statements; reportlab from target/docs-bench-venv, installed when missing), then
prints the median analysis time of N runs in one process and the peak RSS of a one-run process
from /usr/bin/time -v. `--binary` times another build of the same example
(bench/documents-release/run.sh passes the optimised one). Run from the repository root.
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target/bench-docs"
VENV = ROOT / "target/docs-bench-venv"

# Resource generators: (logical-id prefix, CloudFormation YAML body). Half the instances of each
# break a check, so the rules walk both branches.
def resources(n):
    rnd = random.Random(11)
    kinds = [
        ("Bucket", lambda i: f"""    Type: AWS::S3::Bucket
    Properties:
      BucketName: acme-data-{i}
      VersioningConfiguration:
        Status: {"Enabled" if i % 2 else "Suspended"}
      BucketEncryption:
        ServerSideEncryptionConfiguration:
          - ServerSideEncryptionByDefault:
              SSEAlgorithm: {"aws:kms" if i % 2 else "AES256"}
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        BlockPublicPolicy: true
        IgnorePublicAcls: true
        RestrictPublicBuckets: {"true" if i % 3 else "false"}
"""),
        ("WebSg", lambda i: f"""    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: web tier {i}
      VpcId: !Ref Vpc
      SecurityGroupIngress:
        - IpProtocol: tcp
          FromPort: 443
          ToPort: 443
          CidrIp: 0.0.0.0/0
        - IpProtocol: tcp
          FromPort: {22 if i % 2 else 8080}
          ToPort: {22 if i % 2 else 8080}
          CidrIp: {"0.0.0.0/0" if i % 4 == 1 else "10.0.0.0/8"}
"""),
        ("Instance", lambda i: f"""    Type: AWS::EC2::Instance
    Properties:
      ImageId: ami-0abcdef1234567890
      InstanceType: m6i.large
      IamInstanceProfile: !Ref InstanceProfile
      Monitoring: {"true" if i % 2 else "false"}
      MetadataOptions:
        HttpTokens: {"required" if i % 2 else "optional"}
      NetworkInterfaces:
        - DeviceIndex: "0"
          AssociatePublicIpAddress: {"false" if i % 3 else "true"}
          SubnetId: !Ref Subnet
"""),
        ("Volume", lambda i: f"""    Type: AWS::EC2::Volume
    Properties:
      AvailabilityZone: eu-west-1a
      Size: {rnd.choice([20, 50, 100, 500])}
      Encrypted: {"true" if i % 2 else "false"}
"""),
        ("Database", lambda i: f"""    Type: AWS::RDS::DBInstance
    Properties:
      Engine: postgres
      DBInstanceClass: db.r6g.large
      AllocatedStorage: "100"
      MasterUsername: {"app_admin" if i % 2 else "postgres"}
      ManageMasterUserPassword: true
      StorageEncrypted: {"true" if i % 2 else "false"}
      MultiAZ: {"true" if i % 2 else "false"}
      PubliclyAccessible: false
      DeletionProtection: true
      BackupRetentionPeriod: {7 if i % 2 else 0}
      EnableIAMDatabaseAuthentication: true
      CopyTagsToSnapshot: true
      MonitoringInterval: 60
      EnableCloudwatchLogsExports: [postgresql]
"""),
        ("Function", lambda i: f"""    Type: AWS::Lambda::Function
    Properties:
      Runtime: {"python3.12" if i % 2 else "python3.7"}
      Handler: app.handler
      Role: !GetAtt FunctionRole.Arn
      Code:
        S3Bucket: acme-artifacts
        S3Key: fn-{i}.zip
      VpcConfig:
        SubnetIds: [!Ref Subnet]
        SecurityGroupIds: [!Ref LambdaSg]
"""),
        ("Queue", lambda i: f"""    Type: AWS::SQS::Queue
    Properties:
      QueueName: orders-{i}
      {"KmsMasterKeyId: alias/orders" if i % 2 else "SqsManagedSseEnabled: false"}
"""),
        ("Topic", lambda i: f"""    Type: AWS::SNS::Topic
    Properties:
      TopicName: events-{i}
      {"KmsMasterKeyId: alias/aws/sns" if i % 2 else "DisplayName: events"}
"""),
        ("Table", lambda i: f"""    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - AttributeName: pk
          AttributeType: S
      KeySchema:
        - AttributeName: pk
          KeyType: HASH
      PointInTimeRecoverySpecification:
        PointInTimeRecoveryEnabled: {"true" if i % 2 else "false"}
      SSESpecification:
        SSEEnabled: true
"""),
        ("LogGroup", lambda i: f"""    Type: AWS::Logs::LogGroup
    Properties:
      LogGroupName: /acme/app-{i}
      RetentionInDays: {365 if i % 2 else 14}
"""),
        ("Key", lambda i: f"""    Type: AWS::KMS::Key
    Properties:
      EnableKeyRotation: {"true" if i % 2 else "false"}
      KeyPolicy:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal:
              AWS: !Sub "arn:aws:iam::${{AWS::AccountId}}:root"
            Action: "kms:*"
            Resource: "*"
"""),
        ("Role", lambda i: f"""    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal:
              Service: lambda.amazonaws.com
            Action: sts:AssumeRole
      Policies:
        - PolicyName: app-{i}
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: {'"*"' if i % 5 == 0 else "[s3:GetObject, s3:PutObject]"}
                Resource: {'"*"' if i % 5 == 0 else f'"arn:aws:s3:::acme-data-{i}/*"'}
"""),
    ]
    fixed = """  Vpc:
    Type: AWS::EC2::VPC
    Properties:
      CidrBlock: 10.0.0.0/16
  Subnet:
    Type: AWS::EC2::Subnet
    Properties:
      VpcId: !Ref Vpc
      CidrBlock: 10.0.1.0/24
      MapPublicIpOnLaunch: false
  LambdaSg:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: lambda
      VpcId: !Ref Vpc
  InstanceProfile:
    Type: AWS::IAM::InstanceProfile
    Properties:
      Roles: [!Ref FunctionRole]
  FunctionRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal:
              Service: lambda.amazonaws.com
            Action: sts:AssumeRole
"""
    out = ["AWSTemplateFormatVersion: \"2010-09-09\"",
           "Description: Generated benchmark stack with many resources",
           "Resources:", fixed.rstrip("\n")]
    for i in range(n - 5):
        prefix, body = kinds[i % len(kinds)]
        out.append(f"  {prefix}{i}:\n{body(i).rstrip()}")
    return "\n".join(out) + "\n"


SECTIONS = [
    ("Overview", [
        "The claims platform ingests scanned forms from partner clinics and stores the extracted "
        "records in Amazon RDS for PostgreSQL and the originals in Amazon S3.",
        "Patient health information is processed in eu-west-1 only and never leaves the AWS "
        "organisation.",
        "The public API is served by an Application Load Balancer in front of ECS Fargate tasks.",
    ]),
    ("Data protection", [
        "All S3 buckets are encrypted at rest with customer managed AWS KMS keys and versioning "
        "is enabled on every bucket that holds claims.",
        "The RDS instances use storage encryption with KMS and automated backups are retained for "
        "35 days.",
        "Encryption keys are rotated automatically every year and key policies restrict usage to "
        "the application roles.",
        "TLS 1.2 or later is required for all connections, including traffic between services "
        "inside the VPC.",
    ]),
    ("Identity and access", [
        "Administrators sign in through AWS IAM Identity Center with multi-factor authentication "
        "enforced for every user.",
        "The root account has MFA, no access keys, and is used only for break-glass procedures.",
        "Application roles follow least privilege and are reviewed every quarter by the security "
        "team.",
        "Legacy batch jobs still use a long-lived access key for an IAM user, to be replaced in "
        "the next release.",
    ]),
    ("Logging and monitoring", [
        "CloudTrail is enabled in all regions with log file validation, and trails deliver to a "
        "dedicated logging account.",
        "VPC flow logs are sent to CloudWatch Logs and retained for one year.",
        "GuardDuty and Security Hub are enabled in every account, and findings page the on-call "
        "engineer.",
        "Application logs are kept for 30 days in CloudWatch Logs.",
    ]),
    ("Network", [
        "Databases run in private subnets without public IP addresses and accept connections "
        "only from the application security group.",
        "SSH access to instances is disabled; operators use Session Manager instead.",
        "A web application firewall protects the load balancer against common exploits.",
    ]),
    ("Resilience", [
        "The database runs in a Multi-AZ deployment and the service spans three Availability "
        "Zones.",
        "Backups are copied to a second region every night and restores are tested each month.",
        "The recovery time objective is four hours and the recovery point objective is fifteen "
        "minutes.",
    ]),
]


def make_pdf(path, pages):
    if not (VENV / "bin/python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin/pip"), "install", "--quiet", "reportlab"], check=True)
    script = f"""
import json, sys
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
sections = json.loads(sys.argv[1])
c = canvas.Canvas({str(path)!r}, pagesize=A4)
c.setTitle("Claims platform design")
width, height = A4
for page in range({pages}):
    y = height - 60
    title, paras = sections[page % len(sections)]
    c.setFont("Helvetica-Bold", 14)
    c.drawString(50, y, f"{{page // len(sections) + 1}}.{{page % len(sections) + 1}} {{title}}")
    y -= 28
    c.setFont("Helvetica", 10)
    while y > 80:
        for para in paras:
            words, line = para.split(), ""
            for w in words:
                if len(line) + len(w) > 95:
                    c.drawString(50, y, line)
                    y -= 14
                    line = ""
                line += w + " "
            c.drawString(50, y, line)
            y -= 22
            if y <= 80:
                break
    c.drawString(width / 2 - 10, 40, str(page + 1))
    c.showPage()
c.save()
"""
    subprocess.run([str(VENV / "bin/python"), "-c", script, json.dumps(SECTIONS)], check=True)


def build(profile):
    env = dict(os.environ, SQLX_OFFLINE="true")
    cmd = ["cargo", "build", "--quiet", "--example", "analyse_document"]
    if profile != "debug":
        cmd += ["--profile", profile]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    sub = "debug" if profile in ("debug", "dev") else profile
    return ROOT / "target" / sub / "examples/analyse_document"


def measure(binary, path, repeat):
    p = subprocess.run([str(binary), "--quiet", "--repeat", str(repeat), str(path)],
                       capture_output=True, text=True, check=True)
    doc = next(json.loads(l) for l in p.stdout.splitlines() if '"document"' in l)
    # A one-run process: its peak is what one analysis needs (plus the process itself).
    t = subprocess.run(["/usr/bin/time", "-v", str(binary), "--quiet", str(path)],
                       capture_output=True, text=True, check=True)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t.stderr).group(1))
    base = subprocess.run(["/usr/bin/time", "-v", str(binary), "--quiet", "/dev/null"],
                          capture_output=True, text=True)
    base_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", base.stderr).group(1))
    return doc, rss_kb, base_kb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--profile", default="debug")
    ap.add_argument("--binary", help="an already built analyse_document to time instead")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    template = OUT / "template-1000.yaml"
    template.write_text(resources(1000))
    pdf = OUT / "design-50-pages.pdf"
    if not pdf.exists():
        make_pdf(pdf, 50)
    binary = Path(args.binary) if args.binary else build(args.profile)
    label = args.binary or f"{args.profile} build"
    for path, goal in ((template, 200), (pdf, 1000)):
        doc, rss_kb, base_kb = measure(binary, path, args.repeat)
        verdict = "meets" if doc["ms_median"] < goal else "misses"
        print(f"{path.relative_to(ROOT)} ({doc['bytes']:,} bytes, {doc['kind']}, {json.dumps(doc['summary'])})")
        print(f"  {label}: median {doc['ms_median']:.1f} ms, min {doc['ms_min']:.1f} ms over "
              f"{doc['runs']} runs; goal < {goal} ms: {verdict}")
        print(f"  peak RSS {rss_kb / 1024:.1f} MiB (the same process on an empty file: "
              f"{base_kb / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
