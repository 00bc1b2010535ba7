"""Moto seeding for the identity checks: IAM, Access Analyzer, KMS, Secrets Manager, ACM.

`seed(session, expect)` creates resources named `chk-identity-*` and records the verdict each
check should give on them. Verdicts moto cannot produce are explained where they are left out:
moto stamps every resource with the current time (no old keys, secrets or passwords), has no
root user row in the credential report, and lists every IAM server certificate as expired.
"""

import datetime
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

P = "chk-identity-"


def _doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(action, resource="*"):
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def _cert(domain, days, key):
    """A self-signed certificate and its key, PEM-encoded, valid for `days` from now."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def _attach(call, **kwargs):
    """Attaches an AWS managed policy; False when moto runs without them."""
    try:
        call(**kwargs)
        return True
    except Exception as e:  # botocore's NoSuchEntity, raised by a per-client class
        if "NoSuchEntity" in str(e):
            return False
        raise


def seed(session, expect):
    account = session.client("sts", region_name="us-east-1").get_caller_identity()["Account"]
    root = f"arn:aws:iam::{account}:root"
    _iam(session, expect, root)
    _accessanalyzer(expect, root)
    _kms(session, expect)
    _secretsmanager(session, expect)
    _acm(session, expect)


def _iam(session, expect, root):
    iam = session.client("iam", region_name="us-east-1")

    # Account level (IAM is this group's service). One password policy per account: strong,
    # 14 characters and 24 remembered, but passwords never expire, which PCI requires.
    iam.update_account_password_policy(
        MinimumPasswordLength=14,
        RequireSymbols=True,
        RequireNumbers=True,
        RequireUppercaseCharacters=True,
        RequireLowercaseCharacters=True,
        PasswordReusePrevention=24,
    )
    expect("iam-password-policy-strong", root, "pass")
    expect("iam-password-policy-min-length-14", root, "pass")
    expect("iam-password-policy-prevents-reuse", root, "pass")
    expect("iam-password-policy-pci-baseline", root, "fail")
    # moto's account summary: no root access keys, no root MFA (and no way to add either).
    expect("iam-root-no-access-keys", root, "pass")
    expect("iam-root-mfa-enabled", root, "fail")
    expect("iam-root-hardware-mfa-enabled", root, "fail")
    # moto's credential report has no <root_account> row, so root use cannot be decided.
    expect("iam-root-user-not-used", root, "error")
    # Workforce federation through a SAML provider (account level: no fail case alongside).
    metadata = (
        '<?xml version="1.0"?><md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        'entityID="https://idp.chk-identity.example">'
        # IAM wants at least 1000 characters of metadata.
        + "<!-- " + "x" * 1000 + " -->"
        + "</md:EntityDescriptor>"
    )
    iam.create_saml_provider(Name=P + "idp", SAMLMetadataDocument=metadata)
    expect("iam-identity-federation-used", root, "pass")

    # Customer managed policies.
    policies = {
        "admin": (_doc(_allow("*")), "fail", "fail", "fail", "fail"),
        "readonly": (_doc(_allow("s3:GetObject")), "pass", "pass", "pass", "pass"),
        "s3all": (
            _doc(_allow("s3:*", "arn:aws:s3:::chk-identity-bucket/*")),
            "pass",
            "fail",
            "pass",
            "pass",
        ),
        "kmsdecrypt": (_doc(_allow(["kms:Decrypt", "kms:DescribeKey"])), "pass", "pass", "pass", "fail"),
        "passrole": (_doc(_allow(["iam:PassRole", "ec2:RunInstances"])), "pass", "pass", "fail", "pass"),
    }
    arns = {}
    for name, (document, admin, wildcard, escalation, decrypt) in policies.items():
        arn = iam.create_policy(PolicyName=P + name, PolicyDocument=document)["Policy"]["Arn"]
        arns[name] = arn
        expect("iam-policy-no-full-admin-privileges", arn, admin)
        expect("iam-policy-no-service-wildcard-actions", arn, wildcard)
        expect("iam-policy-no-privilege-escalation", arn, escalation)
        expect("kms-customer-policies-no-decrypt-all-keys", arn, decrypt)

    trust = _doc(
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    )
    # A role with a harmless inline policy and AWSSupportAccess.
    role = iam.create_role(RoleName=P + "support", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName=P + "support", PolicyName=P + "read", PolicyDocument=_doc(_allow("s3:GetObject")))
    # AWS managed policies exist in moto only when it runs with MOTO_IAM_LOAD_MANAGED_POLICIES=true.
    managed = _attach(iam.attach_role_policy, RoleName=P + "support", PolicyArn="arn:aws:iam::aws:policy/AWSSupportAccess")
    expect("iam-support-role-exists", root, "pass" if managed else "fail")
    expect("iam-policy-no-full-admin-privileges", role, "pass")
    expect("iam-policy-no-privilege-escalation", role, "pass")
    expect("kms-inline-policies-no-decrypt-all-keys", role, "pass")
    expect("iam-cloudshell-full-access-restricted", role, "pass")
    # AdministratorAccess attached: the AWS managed policy itself is reported.
    iam.create_role(RoleName=P + "admin", AssumeRolePolicyDocument=trust)
    if _attach(iam.attach_role_policy, RoleName=P + "admin", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"):
        expect("iam-policy-no-full-admin-privileges", "arn:aws:iam::aws:policy/AdministratorAccess", "fail")

    # A group whose inline policy grants everything.
    group = iam.create_group(GroupName=P + "group")["Group"]["Arn"]
    iam.put_group_policy(GroupName=P + "group", PolicyName=P + "all", PolicyDocument=_doc(_allow("*")))
    expect("iam-policy-no-full-admin-privileges", group, "fail")
    expect("iam-policy-no-privilege-escalation", group, "fail")
    expect("kms-inline-policies-no-decrypt-all-keys", group, "fail")
    expect("iam-cloudshell-full-access-restricted", group, "pass")

    # A compliant console user: password, MFA, permissions only through the group, no keys.
    good = iam.create_user(UserName=P + "good")["User"]["Arn"]
    iam.create_login_profile(UserName=P + "good", Password="Chk-identity-pw-0001!")
    iam.add_user_to_group(GroupName=P + "group", UserName=P + "good")
    serial = iam.create_virtual_mfa_device(VirtualMFADeviceName=P + "good")["VirtualMFADevice"]["SerialNumber"]
    iam.enable_mfa_device(
        UserName=P + "good", SerialNumber=serial, AuthenticationCode1="123456", AuthenticationCode2="654321"
    )
    for check in (
        "iam-user-mfa-enabled",
        "iam-user-console-mfa-enabled",
        "iam-user-single-active-access-key",
        "iam-user-no-access-key-at-creation",
        "iam-user-no-direct-policies",
        "iam-cloudshell-full-access-restricted",
        "iam-unused-credentials-45-days-removed",
        "iam-unused-credentials-90-days-removed",
    ):
        expect(check, good, "pass")

    # A non-compliant console user: no MFA, two never-used keys issued at creation, its own
    # policies (one inline allowing kms:* on every key), AWSCloudShellFullAccess.
    bad = iam.create_user(UserName=P + "bad")["User"]["Arn"]
    iam.create_login_profile(UserName=P + "bad", Password="Chk-identity-pw-0002!")
    iam.create_access_key(UserName=P + "bad")
    iam.create_access_key(UserName=P + "bad")
    iam.put_user_policy(UserName=P + "bad", PolicyName=P + "kms", PolicyDocument=_doc(_allow("kms:*")))
    cloudshell = _attach(
        iam.attach_user_policy, UserName=P + "bad", PolicyArn="arn:aws:iam::aws:policy/AWSCloudShellFullAccess"
    )
    expect("iam-cloudshell-full-access-restricted", bad, "fail" if cloudshell else "pass")
    for check in (
        "iam-user-mfa-enabled",
        "iam-user-console-mfa-enabled",
        "iam-user-single-active-access-key",
        "iam-user-no-access-key-at-creation",
        "iam-user-no-direct-policies",
        "kms-inline-policies-no-decrypt-all-keys",
    ):
        expect(check, bad, "fail")
    expect("iam-policy-no-full-admin-privileges", bad, "pass")
    expect("iam-policy-no-privilege-escalation", bad, "pass")
    # Keys and passwords are all brand new in moto: rotation and idle checks can only pass.
    expect("iam-access-keys-rotated-90-days", bad, "pass")
    expect("iam-unused-credentials-45-days-removed", bad, "pass")
    expect("iam-unused-credentials-90-days-removed", bad, "pass")

    # moto lists every server certificate with Expiration 2012: only the fail case exists.
    body, key = _cert("chk-identity.example.com", 365, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    cert = iam.upload_server_certificate(
        ServerCertificateName=P + "cert", CertificateBody=body.decode(), PrivateKey=key.decode()
    )["ServerCertificateMetadata"]["Arn"]
    expect("iam-no-expired-server-certificates", cert, "fail")


def _accessanalyzer(expect, root):
    # moto has no IAM Access Analyzer endpoint: ListAnalyzers fails in both regions and the
    # check reports the error on the account.
    expect("accessanalyzer-enabled-all-regions", root, "error")


def _kms(session, expect):
    kms = session.client("kms", region_name="us-east-1")

    def key(description, **kwargs):
        meta = kms.create_key(Description=P + description, **kwargs)["KeyMetadata"]
        # moto resolves key ids, not ARNs, in EnableKeyRotation and ScheduleKeyDeletion.
        return meta["KeyId"], meta["Arn"]

    rotating_id, rotating = key("rotating")
    kms.enable_key_rotation(KeyId=rotating_id)
    expect("kms-key-rotation-enabled", rotating, "pass")
    expect("kms-key-not-pending-deletion", rotating, "pass")
    expect("kms-key-not-public", rotating, "pass")

    public_policy = _doc(
        {"Sid": "open", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}
    )
    _, public = key("public", Policy=public_policy)
    expect("kms-key-rotation-enabled", public, "fail")
    expect("kms-key-not-pending-deletion", public, "pass")
    expect("kms-key-not-public", public, "fail")

    # A key scheduled for deletion: rotation no longer applies to it.
    deleting_id, deleting = key("deleting")
    kms.schedule_key_deletion(KeyId=deleting_id, PendingWindowInDays=7)
    expect("kms-key-not-pending-deletion", deleting, "fail")
    expect("kms-key-not-public", deleting, "pass")


def _secretsmanager(session, expect):
    sm = session.client("secretsmanager", region_name="us-east-1")
    plain = sm.create_secret(Name=P + "plain", SecretString="s3cr3t")["ARN"]
    expect("secretsmanager-rotation-enabled", plain, "fail")
    expect("secretsmanager-rotation-succeeds", plain, "not_applicable")
    # Everything in moto is created now and LastAccessedDate stays empty: age checks only pass.
    expect("secretsmanager-rotated-recently", plain, "pass")
    expect("secretsmanager-unused-secrets-removed", plain, "pass")

    # Rotation switched on without a rotation function (moto allows it; AWS would not), so it
    # is not a working rotation; its schedule is still in the future. A real rotation function
    # cannot run in moto without Docker, so no secret passes secretsmanager-rotation-enabled.
    scheduled = sm.create_secret(Name=P + "scheduled", SecretString="s3cr3t")["ARN"]
    sm.rotate_secret(SecretId=scheduled, RotationRules={"AutomaticallyAfterDays": 30})
    expect("secretsmanager-rotation-enabled", scheduled, "fail")
    expect("secretsmanager-rotation-succeeds", scheduled, "pass")
    expect("secretsmanager-rotated-recently", scheduled, "pass")


def _acm(session, expect):
    acm = session.client("acm", region_name="us-east-1")

    def imported(domain, days, key):
        body, pem_key = _cert(domain, days, key)
        return acm.import_certificate(Certificate=body, PrivateKey=pem_key)["CertificateArn"]

    rsa2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    valid = imported("valid.chk-identity.example.com", 365, rsa2048)
    expiring = imported("expiring.chk-identity.example.com", 10, rsa2048)
    weak = imported("weak.chk-identity.example.com", 365, rsa.generate_private_key(public_exponent=65537, key_size=1024))
    ecdsa = imported("ec.chk-identity.example.com", 365, ec.generate_private_key(ec.SECP256R1()))

    # ACM's InUse comes from the resources using a certificate: a Classic Load Balancer
    # listener is the one moto records.
    elb = session.client("elb", region_name="us-east-1")
    elb.create_load_balancer(
        LoadBalancerName=P + "clb",
        AvailabilityZones=["us-east-1a"],
        Listeners=[
            {"Protocol": "HTTPS", "LoadBalancerPort": 443, "InstanceProtocol": "HTTP", "InstancePort": 80,
             "SSLCertificateId": valid},
            {"Protocol": "HTTPS", "LoadBalancerPort": 8443, "InstanceProtocol": "HTTP", "InstancePort": 80,
             "SSLCertificateId": expiring},
        ],
    )
    expect("acm-certificate-renewed-before-expiry", valid, "pass")
    expect("acm-certificate-renewed-before-expiry", expiring, "fail")
    expect("acm-certificate-renewed-before-expiry", weak, "not_applicable")
    expect("acm-rsa-certificate-key-length", valid, "pass")
    expect("acm-rsa-certificate-key-length", weak, "fail")
    expect("acm-rsa-certificate-key-length", ecdsa, "not_applicable")
