"""Moto seeding for the ec2 service's checks (EC2, VPC and EBS, one EC2 API).

Everything lives in VPCs this file creates, except the regional EBS encryption-by-default
setting (owned by this group) and the default security groups of moto's default VPCs, whose
allow-all egress rule makes them fail in every region.

Not expressible in moto: a fail for ec2-stopped-instance-removed (moto stamps the stop time
with the current clock, so no instance has been stopped for more than 30 days).
"""

REGION = "us-east-1"
OTHER_REGION = "eu-west-1"


def seed(session, expect):
    account = session.client("sts", region_name=REGION).get_caller_identity()["Account"]
    ec2 = session.client("ec2", region_name=REGION)
    iam = session.client("iam", region_name=REGION)

    def arn(kind, ident, region=REGION, owner=account):
        return f"arn:aws:ec2:{region}:{owner}:{kind}/{ident}"

    def tag(kind, name):
        return [{"ResourceType": kind, "Tags": [{"Key": "Name", "Value": name}]}]

    # VPCs: one with an active flow log, one without.
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16", TagSpecifications=tag("vpc", "chk-ec2-vpc"))["Vpc"]["VpcId"]
    bare_vpc = ec2.create_vpc(CidrBlock="10.78.0.0/16", TagSpecifications=tag("vpc", "chk-ec2-bare"))["Vpc"]["VpcId"]
    ec2.create_flow_logs(
        ResourceIds=[vpc],
        ResourceType="VPC",
        TrafficType="ALL",
        LogDestinationType="cloud-watch-logs",
        LogGroupName="chk-ec2-flow-logs",
        DeliverLogsPermissionArn=f"arn:aws:iam::{account}:role/chk-ec2-flow-logs",
    )
    expect("vpc-flow-logs-enabled", arn("vpc", vpc), "pass")
    expect("vpc-flow-logs-enabled", arn("vpc", bare_vpc), "fail")

    # Default security groups: emptied in the first VPC, as created (allow-all egress) in the
    # second and in moto's default VPCs.
    def default_sg(client, vpc_id):
        groups = client.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}]
        )["SecurityGroups"]
        return groups[0]

    closed = default_sg(ec2, vpc)
    if closed.get("IpPermissions"):
        ec2.revoke_security_group_ingress(GroupId=closed["GroupId"], IpPermissions=closed["IpPermissions"])
    if closed.get("IpPermissionsEgress"):
        ec2.revoke_security_group_egress(GroupId=closed["GroupId"], IpPermissions=closed["IpPermissionsEgress"])
    expect("vpc-default-security-group-closed", arn("security-group", closed["GroupId"]), "pass")
    expect("vpc-default-security-group-closed", arn("security-group", default_sg(ec2, bare_vpc)["GroupId"]), "fail")
    for region in (REGION, OTHER_REGION):
        client = session.client("ec2", region_name=region)
        default_vpcs = client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        for v in default_vpcs:
            group = default_sg(client, v["VpcId"])
            expect("vpc-default-security-group-closed", arn("security-group", group["GroupId"], region), "fail")

    # Subnets: one private (the default for a new subnet), one handing out public addresses.
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=public, MapPublicIpOnLaunch={"Value": True})
    expect("vpc-subnet-no-auto-public-ip", arn("subnet", private), "pass")
    expect("vpc-subnet-no-auto-public-ip", arn("subnet", public), "fail")

    # Network ACLs: one associated with the private subnet that lets SSH in from anywhere; one
    # orphaned that denies every TCP port before allowing all traffic (so SSH/RDP stay shut).
    ssh_acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    ec2.create_network_acl_entry(
        NetworkAclId=ssh_acl, RuleNumber=100, Protocol="6", RuleAction="allow", Egress=False,
        CidrBlock="0.0.0.0/0", PortRange={"From": 22, "To": 22},
    )
    association = ec2.describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": [private]}]
    )["NetworkAcls"][0]
    association_id = next(a["NetworkAclAssociationId"] for a in association["Associations"] if a["SubnetId"] == private)
    ec2.replace_network_acl_association(AssociationId=association_id, NetworkAclId=ssh_acl)
    shut_acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    ec2.create_network_acl_entry(
        NetworkAclId=shut_acl, RuleNumber=90, Protocol="6", RuleAction="deny", Egress=False,
        CidrBlock="0.0.0.0/0", PortRange={"From": 0, "To": 65535},
    )
    ec2.create_network_acl_entry(
        NetworkAclId=shut_acl, RuleNumber=100, Protocol="-1", RuleAction="allow", Egress=False,
        CidrBlock="0.0.0.0/0",
    )
    vpc_default_acl = ec2.describe_network_acls(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default", "Values": ["true"]}]
    )["NetworkAcls"][0]["NetworkAclId"]
    expect("vpc-nacl-no-admin-ports-from-internet", arn("network-acl", ssh_acl), "fail")
    expect("vpc-nacl-no-admin-ports-from-internet", arn("network-acl", shut_acl), "pass")
    # A new VPC's default ACL allows all inbound traffic from anywhere.
    expect("vpc-nacl-no-admin-ports-from-internet", arn("network-acl", vpc_default_acl), "fail")
    expect("vpc-nacl-unused-removed", arn("network-acl", ssh_acl), "pass")
    expect("vpc-nacl-unused-removed", arn("network-acl", shut_acl), "fail")

    # Security groups.
    def group(name, permissions):
        gid = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
        if permissions:
            ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=permissions)
        return gid

    def tcp(port, cidr=None, cidr6=None, to=None):
        perm = {"IpProtocol": "tcp", "FromPort": port, "ToPort": to if to is not None else port}
        if cidr:
            perm["IpRanges"] = [{"CidrIp": cidr}]
        if cidr6:
            perm["Ipv6Ranges"] = [{"CidrIpv6": cidr6}]
        return perm

    sg_open = group("chk-ec2-open", [tcp(22, cidr="0.0.0.0/0"), tcp(3389, cidr6="::/0"), tcp(3306, cidr="0.0.0.0/0")])
    sg_all = group("chk-ec2-all", [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    sg_closed = group("chk-ec2-closed", [tcp(443, cidr="0.0.0.0/0"), tcp(22, cidr="10.0.0.0/8")])
    sg_udp = group("chk-ec2-udp-rdp", [{"IpProtocol": "udp", "FromPort": 3389, "ToPort": 3389, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
    sg_range = group("chk-ec2-range", [tcp(1, cidr="0.0.0.0/0", to=65535)])
    verdicts = {
        # check: (open, all, closed, udp-rdp-v6, tcp 1-65535)
        "vpc-sg-no-ingress-ssh-from-internet": ("fail", "fail", "pass", "pass", "fail"),
        "vpc-sg-no-ingress-rdp-from-internet": ("fail", "fail", "pass", "pass", "fail"),
        "vpc-sg-no-ipv4-admin-ports-open": ("fail", "fail", "pass", "pass", "fail"),
        "vpc-sg-no-ipv6-admin-ports-open": ("fail", "pass", "pass", "fail", "pass"),
        "vpc-sg-no-all-ports-open": ("pass", "fail", "pass", "pass", "fail"),
        "vpc-sg-no-high-risk-ports-open": ("fail", "fail", "pass", "pass", "fail"),
        "vpc-sg-no-database-ports-open": ("fail", "fail", "pass", "pass", "fail"),
    }
    for check, statuses in verdicts.items():
        for gid, status in zip((sg_open, sg_all, sg_closed, sg_udp, sg_range), statuses):
            expect(check, arn("security-group", gid), status)

    # Instances: a well-configured private one and a public, permissive one.
    try:
        iam.create_instance_profile(InstanceProfileName="chk-ec2-profile")
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    good = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        SubnetId=private, SecurityGroupIds=[sg_closed],
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        Monitoring={"Enabled": True},
        IamInstanceProfile={"Name": "chk-ec2-profile"},
        TagSpecifications=tag("instance", "chk-ec2-good"),
    )["Instances"][0]["InstanceId"]
    bad = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": public, "Groups": [sg_open], "AssociatePublicIpAddress": True}],
        MetadataOptions={"HttpTokens": "optional"},
        TagSpecifications=tag("instance", "chk-ec2-bad"),
    )["Instances"][0]["InstanceId"]
    stopped = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        SubnetId=private, SecurityGroupIds=[sg_closed],
        TagSpecifications=tag("instance", "chk-ec2-stopped"),
    )["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[stopped])
    for check, good_status, bad_status in [
        ("ec2-imdsv2-required", "pass", "fail"),
        ("ec2-instance-no-public-ip", "pass", "fail"),
        ("ec2-instance-detailed-monitoring", "pass", "fail"),
        ("ec2-instances-use-iam-roles", "pass", "fail"),
        # The bad instance is public and its group opens SSH and MySQL to the internet.
        ("ec2-instance-no-sensitive-ports-exposed", "pass", "fail"),
        ("ec2-stopped-instance-removed", "pass", "pass"),
    ]:
        expect(check, arn("instance", good), good_status)
        expect(check, arn("instance", bad), bad_status)
    # Stopped just now: within the 30 days allowed (a long-stopped instance cannot be made).
    expect("ec2-stopped-instance-removed", arn("instance", stopped), "pass")

    # Security group use: closed and open are on instances; udp-rdp, all and range on nothing.
    expect("vpc-sg-unused-removed", arn("security-group", sg_closed), "pass")
    expect("vpc-sg-unused-removed", arn("security-group", sg_open), "pass")
    expect("vpc-sg-unused-removed", arn("security-group", sg_udp), "fail")

    # Network interfaces: source/destination check on (the default) and off.
    eni_on = ec2.create_network_interface(SubnetId=private, Groups=[sg_closed], Description="chk-ec2-eni-on")["NetworkInterface"]["NetworkInterfaceId"]
    eni_off = ec2.create_network_interface(SubnetId=private, Groups=[sg_closed], Description="chk-ec2-eni-off")["NetworkInterface"]["NetworkInterfaceId"]
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_off, SourceDestCheck={"Value": False})
    expect("ec2-eni-source-dest-check-enabled", arn("network-interface", eni_on), "pass")
    expect("ec2-eni-source-dest-check-enabled", arn("network-interface", eni_off), "fail")

    # Elastic IPs: one on a network interface, one idle.
    used_eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(AllocationId=used_eip, NetworkInterfaceId=eni_on)
    idle_eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    expect("ec2-elastic-ip-unused-released", arn("elastic-ip", used_eip), "pass")
    expect("ec2-elastic-ip-unused-released", arn("elastic-ip", idle_eip), "fail")

    # Volumes in use: encrypted and not; an unattached one is not judged.
    def volume(encrypted):
        vid = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, Encrypted=encrypted)["VolumeId"]
        return vid

    vol_enc = volume(True)
    vol_plain = volume(False)
    volume(False)
    ec2.attach_volume(VolumeId=vol_enc, InstanceId=good, Device="/dev/sdf")
    ec2.attach_volume(VolumeId=vol_plain, InstanceId=good, Device="/dev/sdg")
    expect("ebs-volume-encrypted", arn("volume", vol_enc), "pass")
    expect("ebs-volume-encrypted", arn("volume", vol_plain), "fail")

    # Snapshots (their ARNs carry no account): encrypted and private; unencrypted and public.
    snap_enc = ec2.create_snapshot(VolumeId=vol_enc, Description="chk-ec2-enc")["SnapshotId"]
    snap_plain = ec2.create_snapshot(VolumeId=vol_plain, Description="chk-ec2-plain")["SnapshotId"]
    ec2.modify_snapshot_attribute(
        SnapshotId=snap_plain, Attribute="createVolumePermission", OperationType="add", GroupNames=["all"]
    )
    expect("ebs-snapshot-encrypted", arn("snapshot", snap_enc, owner=""), "pass")
    expect("ebs-snapshot-encrypted", arn("snapshot", snap_plain, owner=""), "fail")
    expect("ebs-snapshot-not-public", arn("snapshot", snap_enc, owner=""), "pass")
    expect("ebs-snapshot-not-public", arn("snapshot", snap_plain, owner=""), "fail")

    # AMIs (ARNs without account): one private, one launchable by everyone.
    private_ami = ec2.create_image(InstanceId=good, Name="chk-ec2-private")["ImageId"]
    public_ami = ec2.create_image(InstanceId=bad, Name="chk-ec2-public")["ImageId"]
    ec2.modify_image_attribute(ImageId=public_ami, LaunchPermission={"Add": [{"Group": "all"}]})
    expect("ec2-ami-not-public", arn("image", private_ami, owner=""), "pass")
    expect("ec2-ami-not-public", arn("image", public_ami, owner=""), "fail")

    # Launch templates: the good one's default is version 2 (version 1 is lax); the bad one
    # accepts IMDSv1 and asks for a public address.
    good_lt = ec2.create_launch_template(
        LaunchTemplateName="chk-ec2-lt-good",
        LaunchTemplateData={"MetadataOptions": {"HttpTokens": "optional"}},
    )["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(
        LaunchTemplateId=good_lt,
        LaunchTemplateData={
            "MetadataOptions": {"HttpTokens": "required"},
            "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": False}],
        },
    )
    ec2.modify_launch_template(LaunchTemplateId=good_lt, DefaultVersion="2")
    bad_lt = ec2.create_launch_template(
        LaunchTemplateName="chk-ec2-lt-bad",
        LaunchTemplateData={
            "MetadataOptions": {"HttpTokens": "optional"},
            "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": True}],
        },
    )["LaunchTemplate"]["LaunchTemplateId"]
    for check in ("ec2-launch-template-imdsv2-required", "ec2-launch-template-no-public-ip"):
        expect(check, arn("launch-template", good_lt), "pass")
        expect(check, arn("launch-template", bad_lt), "fail")

    # EBS encryption by default: on in us-east-1 (after the unencrypted volumes above), off in
    # eu-west-1.
    ec2.enable_ebs_encryption_by_default()
    expect("ebs-default-encryption-enabled", f"arn:aws:ec2:{REGION}:{account}:ebs-encryption-by-default", "pass")
    expect(
        "ebs-default-encryption-enabled", f"arn:aws:ec2:{OTHER_REGION}:{account}:ebs-encryption-by-default", "fail"
    )
