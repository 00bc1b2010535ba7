//! EC2, VPC and EBS, which share the EC2 API: instances, AMIs, Elastic IPs, launch templates,
//! network interfaces, volumes, snapshots, VPCs, flow logs, subnets, security groups and network
//! ACLs. Each inventory call runs once per region, concurrently, and only when a selected check
//! needs it.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use aws_sdk_ec2::types::{
    Address, CreateVolumePermission, FlowLog, HttpTokensState, Image, Instance, InstanceStateName,
    IpPermission, LaunchTemplateHttpTokensState, LaunchTemplateVersion, MonitoringState,
    NetworkAcl, NetworkInterface, PermissionGroup, RuleAction, SecurityGroup, Snapshot,
    SnapshotAttributeName, Subnet, Volume, VolumeState, Vpc,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{AwsError, Ctx, Finding, Out, Service};
use crate::aws_facts::{DATABASE_PORTS, HIGH_RISK_PORTS};
use crate::scan_client;

const IMDSV2: &str = "ec2-imdsv2-required";
const NO_PUBLIC_IP: &str = "ec2-instance-no-public-ip";
const AMI_NOT_PUBLIC: &str = "ec2-ami-not-public";
const MONITORING: &str = "ec2-instance-detailed-monitoring";
const STOPPED: &str = "ec2-stopped-instance-removed";
const EIP_UNUSED: &str = "ec2-elastic-ip-unused-released";
const LT_IMDSV2: &str = "ec2-launch-template-imdsv2-required";
const LT_NO_PUBLIC_IP: &str = "ec2-launch-template-no-public-ip";
const ENI_SRC_DST: &str = "ec2-eni-source-dest-check-enabled";
const IAM_ROLE: &str = "ec2-instances-use-iam-roles";
const SENSITIVE_PORTS: &str = "ec2-instance-no-sensitive-ports-exposed";
const EBS_DEFAULT: &str = "ebs-default-encryption-enabled";
const VOLUME_ENCRYPTED: &str = "ebs-volume-encrypted";
const SNAPSHOT_NOT_PUBLIC: &str = "ebs-snapshot-not-public";
const SNAPSHOT_ENCRYPTED: &str = "ebs-snapshot-encrypted";
const DEFAULT_SG_CLOSED: &str = "vpc-default-security-group-closed";
const FLOW_LOGS: &str = "vpc-flow-logs-enabled";
const SG_SSH: &str = "vpc-sg-no-ingress-ssh-from-internet";
const SG_RDP: &str = "vpc-sg-no-ingress-rdp-from-internet";
const SG_ADMIN_V4: &str = "vpc-sg-no-ipv4-admin-ports-open";
const SG_ADMIN_V6: &str = "vpc-sg-no-ipv6-admin-ports-open";
const SG_ALL_PORTS: &str = "vpc-sg-no-all-ports-open";
const SG_HIGH_RISK: &str = "vpc-sg-no-high-risk-ports-open";
const SG_DATABASE: &str = "vpc-sg-no-database-ports-open";
const NACL_ADMIN: &str = "vpc-nacl-no-admin-ports-from-internet";
const SUBNET_PUBLIC_IP: &str = "vpc-subnet-no-auto-public-ip";
const SG_UNUSED: &str = "vpc-sg-unused-removed";
const NACL_UNUSED: &str = "vpc-nacl-unused-removed";

pub const SERVICE: Service = Service {
    id: "ec2",
    global: false,
    checks: &[
        IMDSV2,
        NO_PUBLIC_IP,
        AMI_NOT_PUBLIC,
        MONITORING,
        STOPPED,
        EIP_UNUSED,
        LT_IMDSV2,
        LT_NO_PUBLIC_IP,
        ENI_SRC_DST,
        IAM_ROLE,
        SENSITIVE_PORTS,
        EBS_DEFAULT,
        VOLUME_ENCRYPTED,
        SNAPSHOT_NOT_PUBLIC,
        SNAPSHOT_ENCRYPTED,
        DEFAULT_SG_CLOSED,
        FLOW_LOGS,
        SG_SSH,
        SG_RDP,
        SG_ADMIN_V4,
        SG_ADMIN_V6,
        SG_ALL_PORTS,
        SG_HIGH_RISK,
        SG_DATABASE,
        NACL_ADMIN,
        SUBNET_PUBLIC_IP,
        SG_UNUSED,
        NACL_UNUSED,
    ],
    run: |ctx| Box::pin(run(ctx)),
};

const INSTANCE_CHECKS: &[&str] = &[
    IMDSV2,
    NO_PUBLIC_IP,
    MONITORING,
    STOPPED,
    IAM_ROLE,
    SENSITIVE_PORTS,
];
/// Checks judged on each security group's own rules.
const SG_RULE_CHECKS: &[&str] = &[
    SG_SSH,
    SG_RDP,
    SG_ADMIN_V4,
    SG_ADMIN_V6,
    SG_ALL_PORTS,
    SG_HIGH_RISK,
    SG_DATABASE,
];
const SG_CHECKS: &[&str] = &[
    SG_SSH,
    SG_RDP,
    SG_ADMIN_V4,
    SG_ADMIN_V6,
    SG_ALL_PORTS,
    SG_HIGH_RISK,
    SG_DATABASE,
    DEFAULT_SG_CLOSED,
    SG_UNUSED,
];
const SNAPSHOT_CHECKS: &[&str] = &[SNAPSHOT_NOT_PUBLIC, SNAPSHOT_ENCRYPTED];
const NACL_CHECKS: &[&str] = &[NACL_ADMIN, NACL_UNUSED];
const LT_CHECKS: &[&str] = &[LT_IMDSV2, LT_NO_PUBLIC_IP];

/// Remote administration, directory and file-sharing TCP ports; with [`DATABASE_PORTS`], what
/// an instance must not expose to the internet.
const SERVICE_PORTS: &[(i32, &str)] = &[
    (20, "FTP"),
    (21, "FTP"),
    (22, "SSH"),
    (23, "Telnet"),
    (3389, "RDP"),
    (139, "CIFS"),
    (445, "CIFS"),
    (88, "Kerberos"),
    (464, "Kerberos"),
    (389, "LDAP"),
    (636, "LDAPS"),
];

const ADMIN_PORTS: &[i32] = &[22, 3389];

const STOPPED_DAYS_ALLOWED: i64 = 30;

/// An inventory call's result; `None` when no selected check needed it.
type Fetched<T> = Option<Result<Vec<T>, AwsError>>;

async fn fetch<T>(
    needed: bool,
    call: impl Future<Output = Result<Vec<T>, AwsError>>,
) -> Fetched<T> {
    if needed { Some(call.await) } else { None }
}

/// Every item of a paginated EC2 listing, as an inventory future for [`fetch`].
macro_rules! all_items {
    ($request:expr) => {
        async {
            Ok($request
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await?)
        }
    };
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let ec2 = scan_client!(ctx, aws_sdk_ec2);
    let (
        instances,
        groups,
        enis,
        volumes,
        snapshots,
        public_snapshot_candidates,
        images,
        vpcs,
        flow_logs,
        subnets,
        nacls,
        addresses,
        templates,
        ebs_default,
    ) = tokio::join!(
        fetch(ctx.wants_any(INSTANCE_CHECKS), async {
            let reservations = ec2
                .describe_instances()
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await?;
            Ok(reservations
                .into_iter()
                .flat_map(|r| r.instances.unwrap_or_default())
                .collect::<Vec<Instance>>())
        }),
        fetch(
            ctx.wants_any(SG_CHECKS) || ctx.wants(SENSITIVE_PORTS),
            all_items!(ec2.describe_security_groups())
        ),
        fetch(
            ctx.wants_any(&[ENI_SRC_DST, SG_UNUSED]),
            all_items!(ec2.describe_network_interfaces())
        ),
        fetch(
            ctx.wants(VOLUME_ENCRYPTED),
            all_items!(ec2.describe_volumes())
        ),
        fetch(
            ctx.wants_any(SNAPSHOT_CHECKS),
            all_items!(ec2.describe_snapshots().owner_ids("self"))
        ),
        // The owned snapshots restorable by "all": the public ones on AWS in one listing;
        // each is confirmed from its createVolumePermission below, so an endpoint that ignores
        // the filter costs calls but not correctness.
        fetch(
            ctx.wants(SNAPSHOT_NOT_PUBLIC),
            all_items!(
                ec2.describe_snapshots()
                    .owner_ids("self")
                    .restorable_by_user_ids("all")
            )
        ),
        fetch(
            ctx.wants(AMI_NOT_PUBLIC),
            all_items!(ec2.describe_images().owners("self"))
        ),
        fetch(ctx.wants(FLOW_LOGS), all_items!(ec2.describe_vpcs())),
        fetch(ctx.wants(FLOW_LOGS), all_items!(ec2.describe_flow_logs())),
        fetch(
            ctx.wants(SUBNET_PUBLIC_IP),
            all_items!(ec2.describe_subnets())
        ),
        fetch(
            ctx.wants_any(NACL_CHECKS),
            all_items!(ec2.describe_network_acls())
        ),
        fetch(ctx.wants(EIP_UNUSED), async {
            Ok(ec2
                .describe_addresses()
                .send()
                .await?
                .addresses
                .unwrap_or_default())
        }),
        // "$Default" without a template id answers the default version of every template.
        fetch(
            ctx.wants_any(LT_CHECKS),
            all_items!(ec2.describe_launch_template_versions().versions("$Default"))
        ),
        async {
            if ctx.wants(EBS_DEFAULT) {
                Some(
                    ec2.get_ebs_encryption_by_default()
                        .send()
                        .await
                        .map(|r| r.ebs_encryption_by_default)
                        .map_err(AwsError::from),
                )
            } else {
                None
            }
        },
    );

    let groups_by_id: Option<HashMap<&str, &SecurityGroup>> = match &groups {
        Some(Ok(list)) => Some(
            list.iter()
                .filter_map(|g| g.group_id.as_deref().map(|id| (id, g)))
                .collect(),
        ),
        _ => None,
    };
    let groups_error = match &groups {
        Some(Err(e)) => Some(e),
        _ => None,
    };

    match &instances {
        None => {}
        Some(Err(e)) => out.error(INSTANCE_CHECKS, e),
        Some(Ok(list)) => check_instances(ctx, &mut out, list, groups_by_id.as_ref(), groups_error),
    }
    match &groups {
        None => {}
        Some(Err(e)) => out.error(SG_CHECKS, e),
        Some(Ok(list)) => check_security_groups(ctx, &mut out, list, enis.as_ref()),
    }
    match &enis {
        Some(Err(e)) => out.error(&[ENI_SRC_DST], e),
        Some(Ok(list)) if ctx.wants(ENI_SRC_DST) => check_enis(ctx, &mut out, list),
        _ => {}
    }
    match &volumes {
        None => {}
        Some(Err(e)) => out.error(&[VOLUME_ENCRYPTED], e),
        Some(Ok(list)) => check_volumes(ctx, &mut out, list),
    }
    match &snapshots {
        None => {}
        Some(Err(e)) => out.error(SNAPSHOT_CHECKS, e),
        Some(Ok(list)) => {
            check_snapshots(ctx, &mut out, &ec2, list, public_snapshot_candidates).await;
        }
    }
    match &images {
        None => {}
        Some(Err(e)) => out.error(&[AMI_NOT_PUBLIC], e),
        Some(Ok(list)) => check_images(ctx, &mut out, list),
    }
    match (&vpcs, &flow_logs) {
        (Some(Err(e)), _) | (_, Some(Err(e))) => out.error(&[FLOW_LOGS], e),
        (Some(Ok(vpcs)), Some(Ok(logs))) => check_flow_logs(ctx, &mut out, vpcs, logs),
        _ => {}
    }
    match &subnets {
        None => {}
        Some(Err(e)) => out.error(&[SUBNET_PUBLIC_IP], e),
        Some(Ok(list)) => check_subnets(ctx, &mut out, list),
    }
    match &nacls {
        None => {}
        Some(Err(e)) => out.error(NACL_CHECKS, e),
        Some(Ok(list)) => check_nacls(ctx, &mut out, list),
    }
    match &addresses {
        None => {}
        Some(Err(e)) => out.error(&[EIP_UNUSED], e),
        Some(Ok(list)) => check_addresses(ctx, &mut out, list),
    }
    match &templates {
        None => {}
        Some(Err(e)) => out.error(LT_CHECKS, e),
        Some(Ok(list)) => check_launch_templates(ctx, &mut out, list),
    }
    match ebs_default {
        None => {}
        Some(Err(e)) => out.error(&[EBS_DEFAULT], &e),
        Some(Ok(enabled)) => out.verdict(
            EBS_DEFAULT,
            &ctx.arn("ec2", "ebs-encryption-by-default"),
            enabled == Some(true),
            "EBS encryption by default is enabled in this region",
            match enabled {
                Some(false) => "EBS encryption by default is disabled in this region",
                _ => "AWS did not report whether EBS encryption by default is enabled",
            },
            json!({"EbsEncryptionByDefault": enabled}),
        ),
    }
    out.finish()
}

fn instance_arn(ctx: &Ctx, id: &str) -> String {
    ctx.arn("ec2", &format!("instance/{id}"))
}

/// The day an instance was stopped, from the "User initiated (2024-01-31 12:00:00 GMT)" text EC2
/// puts in StateTransitionReason; the API has no field for it.
fn stopped_at(reason: &str) -> Option<chrono::NaiveDateTime> {
    let start = reason.rfind('(')? + 1;
    let end = start + reason[start..].find(')')?;
    let stamp = reason[start..end]
        .trim()
        .trim_end_matches("GMT")
        .trim_end_matches("UTC")
        .trim();
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").ok()
}

fn check_instances(
    ctx: &Ctx,
    out: &mut Out,
    instances: &[Instance],
    groups: Option<&HashMap<&str, &SecurityGroup>>,
    groups_error: Option<&AwsError>,
) {
    // Terminated instances linger in the listing for a while; they hold nothing to judge.
    let live: Vec<&Instance> = instances
        .iter()
        .filter(|i| {
            !matches!(
                i.state.as_ref().and_then(|s| s.name.as_ref()),
                Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
            )
        })
        .collect();
    if live.is_empty() {
        out.none_found(INSTANCE_CHECKS, "EC2 instances");
        return;
    }
    for instance in live {
        let id = instance.instance_id.as_deref().unwrap_or("unknown");
        let arn = instance_arn(ctx, id);
        let state = instance
            .state
            .as_ref()
            .and_then(|s| s.name.as_ref())
            .map(|s| s.as_str().to_string());

        let tokens = instance
            .metadata_options
            .as_ref()
            .and_then(|m| m.http_tokens.as_ref());
        let endpoint = instance
            .metadata_options
            .as_ref()
            .and_then(|m| m.http_endpoint.as_ref())
            .map(|e| e.as_str());
        out.verdict(
            IMDSV2,
            &arn,
            tokens == Some(&HttpTokensState::Required),
            "metadata service requires IMDSv2 session tokens (HttpTokens required)",
            match tokens {
                Some(t) => format!("metadata service accepts IMDSv1 requests (HttpTokens {t})"),
                None => "AWS reported no HttpTokens setting for the instance".to_string(),
            },
            json!({"instance_id": id, "HttpTokens": tokens.map(|t| t.as_str()),
                   "HttpEndpoint": endpoint}),
        );

        let interfaces = instance.network_interfaces.as_deref().unwrap_or_default();
        let mut public_ips: Vec<&str> = instance.public_ip_address.as_deref().into_iter().collect();
        for ip in interfaces
            .iter()
            .filter_map(|n| n.association.as_ref()?.public_ip.as_deref())
        {
            if !public_ips.contains(&ip) {
                public_ips.push(ip);
            }
        }
        let ipv6: Vec<&str> = interfaces
            .iter()
            .flat_map(|n| n.ipv6_addresses.as_deref().unwrap_or_default())
            .filter_map(|a| a.ipv6_address.as_deref())
            .collect();
        out.verdict(
            NO_PUBLIC_IP,
            &arn,
            public_ips.is_empty(),
            "instance has no public IPv4 address",
            format!("instance has public IPv4 address {}", public_ips.join(", ")),
            json!({"instance_id": id, "PublicIpAddresses": public_ips}),
        );

        let monitoring = instance.monitoring.as_ref().and_then(|m| m.state.as_ref());
        out.verdict(
            MONITORING,
            &arn,
            monitoring == Some(&MonitoringState::Enabled),
            "detailed (one-minute) monitoring is enabled",
            match monitoring {
                Some(m) => format!("detailed monitoring is {m}, not enabled"),
                None => "AWS reported no monitoring state for the instance".to_string(),
            },
            json!({"instance_id": id, "Monitoring": monitoring.map(|m| m.as_str())}),
        );

        let transition = instance.state_transition_reason.as_deref().unwrap_or("");
        if state.as_deref() == Some("stopped") {
            let since = stopped_at(transition);
            let days = since.map(|t| (chrono::Utc::now().naive_utc() - t).num_days());
            let evidence = json!({"instance_id": id, "State": state,
                "StateTransitionReason": transition, "stopped_days": days,
                "allowed_days": STOPPED_DAYS_ALLOWED});
            match days {
                Some(d) if d <= STOPPED_DAYS_ALLOWED => out.pass(
                    STOPPED,
                    &arn,
                    format!("stopped {d} days ago, within {STOPPED_DAYS_ALLOWED} days"),
                    evidence,
                ),
                Some(d) => out.fail(
                    STOPPED,
                    &arn,
                    format!("stopped {d} days ago, more than {STOPPED_DAYS_ALLOWED} days"),
                    evidence,
                ),
                None => out.fail(
                    STOPPED,
                    &arn,
                    "stopped since an unknown date (StateTransitionReason gives none)",
                    evidence,
                ),
            }
        } else {
            out.pass(
                STOPPED,
                &arn,
                format!(
                    "instance is {}, not stopped",
                    state.as_deref().unwrap_or("in an unreported state")
                ),
                json!({"instance_id": id, "State": state}),
            );
        }

        let profile = instance
            .iam_instance_profile
            .as_ref()
            .and_then(|p| p.arn.as_deref());
        out.verdict(
            IAM_ROLE,
            &arn,
            profile.is_some(),
            format!(
                "instance profile {} is attached",
                profile.unwrap_or_default()
            ),
            "no instance profile (IAM role) is attached",
            json!({"instance_id": id, "IamInstanceProfile": profile}),
        );

        if ctx.wants(SENSITIVE_PORTS) {
            check_instance_exposure(
                out,
                &arn,
                id,
                instance,
                &public_ips,
                &ipv6,
                groups,
                groups_error,
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_instance_exposure(
    out: &mut Out,
    arn: &str,
    id: &str,
    instance: &Instance,
    public_ips: &[&str],
    ipv6: &[&str],
    groups: Option<&HashMap<&str, &SecurityGroup>>,
    groups_error: Option<&AwsError>,
) {
    let mut group_ids: Vec<&str> = instance
        .security_groups
        .iter()
        .flatten()
        .chain(
            instance
                .network_interfaces
                .iter()
                .flatten()
                .flat_map(|n| n.groups.iter().flatten()),
        )
        .filter_map(|g| g.group_id.as_deref())
        .collect();
    group_ids.sort_unstable();
    group_ids.dedup();
    if public_ips.is_empty() && ipv6.is_empty() {
        out.pass(
            SENSITIVE_PORTS,
            arn,
            "instance has no public IPv4 or IPv6 address, so no internet-open rule reaches it",
            json!({"instance_id": id, "PublicIpAddresses": public_ips, "Ipv6Addresses": ipv6,
                   "security_groups": group_ids}),
        );
        return;
    }
    let Some(groups) = groups else {
        if let Some(e) = groups_error {
            out.error_on(SENSITIVE_PORTS, arn, e);
        }
        return;
    };
    let mut exposed = Vec::new();
    for gid in &group_ids {
        let Some(group) = groups.get(gid) else {
            out.error_on(
                SENSITIVE_PORTS,
                arn,
                &format!("security group {gid} of the instance is not in the region's listing"),
            );
            return;
        };
        for rule in open_rules(group) {
            // An IPv6-wide rule only reaches an instance with an IPv6 address, and likewise.
            if (rule.ipv6 && ipv6.is_empty()) || (!rule.ipv6 && public_ips.is_empty()) {
                continue;
            }
            for (port, name) in SERVICE_PORTS.iter().chain(DATABASE_PORTS) {
                if rule.covers(Proto::Tcp, *port) {
                    exposed.push(json!({"group_id": gid, "port": port, "service": name,
                                        "rule": rule.evidence()}));
                }
            }
        }
    }
    let names: Vec<String> = exposed
        .iter()
        .map(|e| format!("{} {}", e["service"].as_str().unwrap_or(""), e["port"]))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    out.verdict(
        SENSITIVE_PORTS,
        arn,
        exposed.is_empty(),
        "instance is public but none of its security groups opens a sensitive port to the internet",
        format!(
            "public instance has sensitive ports open to the internet: {}",
            names.join(", ")
        ),
        json!({"instance_id": id, "PublicIpAddresses": public_ips, "Ipv6Addresses": ipv6,
               "security_groups": group_ids, "exposed": exposed}),
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    All,
    Tcp,
    Udp,
    Other,
}

impl Proto {
    fn parse(protocol: &str) -> Self {
        match protocol {
            "-1" | "all" => Proto::All,
            "tcp" | "6" => Proto::Tcp,
            "udp" | "17" => Proto::Udp,
            _ => Proto::Other,
        }
    }
}

/// One inbound security group rule from the whole internet (0.0.0.0/0 or ::/0).
struct OpenRule<'a> {
    protocol: &'a str,
    proto: Proto,
    from: i32,
    to: i32,
    source: &'a str,
    ipv6: bool,
}

impl OpenRule<'_> {
    fn covers(&self, proto: Proto, port: i32) -> bool {
        self.proto == Proto::All || (self.proto == proto && self.from <= port && port <= self.to)
    }

    /// Every port: all protocols, or a TCP/UDP range from 0 (or 1, port 0 being unusable) to 65535.
    fn all_ports(&self) -> bool {
        self.proto == Proto::All
            || (matches!(self.proto, Proto::Tcp | Proto::Udp) && self.from <= 1 && self.to >= 65535)
    }

    fn evidence(&self) -> Value {
        json!({"IpProtocol": self.protocol, "FromPort": self.from, "ToPort": self.to,
               "source": self.source})
    }

    fn describe(&self) -> String {
        let ports = if self.proto == Proto::All {
            "all traffic".to_string()
        } else if self.from == self.to {
            format!("{} {}", self.protocol, self.from)
        } else {
            format!("{} {}-{}", self.protocol, self.from, self.to)
        };
        format!("{ports} from {}", self.source)
    }
}

fn open_rules(group: &SecurityGroup) -> Vec<OpenRule<'_>> {
    let mut rules = Vec::new();
    for perm in group.ip_permissions.iter().flatten() {
        let protocol = perm.ip_protocol.as_deref().unwrap_or("-1");
        let proto = Proto::parse(protocol);
        // EC2 omits or sends -1 for the ports of all-port rules.
        let (from, to) = port_span(perm);
        let v4 = perm
            .ip_ranges
            .iter()
            .flatten()
            .filter_map(|r| r.cidr_ip.as_deref())
            .filter(|c| *c == "0.0.0.0/0")
            .map(|c| (c, false));
        let v6 = perm
            .ipv6_ranges
            .iter()
            .flatten()
            .filter_map(|r| r.cidr_ipv6.as_deref())
            .filter(|c| *c == "::/0")
            .map(|c| (c, true));
        for (source, ipv6) in v4.chain(v6) {
            rules.push(OpenRule {
                protocol,
                proto,
                from,
                to,
                source,
                ipv6,
            });
        }
    }
    rules
}

fn port_span(perm: &IpPermission) -> (i32, i32) {
    (
        perm.from_port.filter(|p| *p >= 0).unwrap_or(0),
        perm.to_port.filter(|p| *p >= 0).unwrap_or(65535),
    )
}

fn group_arn(ctx: &Ctx, group: &SecurityGroup, id: &str) -> String {
    group
        .security_group_arn
        .clone()
        .unwrap_or_else(|| ctx.arn("ec2", &format!("security-group/{id}")))
}

fn check_security_groups(
    ctx: &Ctx,
    out: &mut Out,
    groups: &[SecurityGroup],
    enis: Option<&Result<Vec<NetworkInterface>, AwsError>>,
) {
    if groups.is_empty() {
        out.none_found(SG_CHECKS, "security groups");
        return;
    }
    let in_use: Option<HashMap<&str, Vec<&str>>> = match enis {
        Some(Ok(list)) => {
            let mut used: HashMap<&str, Vec<&str>> = HashMap::new();
            for eni in list {
                let eni_id = eni.network_interface_id.as_deref().unwrap_or("unknown");
                for gid in eni
                    .groups
                    .iter()
                    .flatten()
                    .filter_map(|g| g.group_id.as_deref())
                {
                    used.entry(gid).or_default().push(eni_id);
                }
            }
            Some(used)
        }
        _ => None,
    };
    let mut any_default = false;
    let mut any_custom = false;
    for group in groups {
        let id = group.group_id.as_deref().unwrap_or("unknown");
        let arn = group_arn(ctx, group, id);
        let name = group.group_name.as_deref().unwrap_or("");
        let vpc = group.vpc_id.as_deref();
        let is_default = name == "default";
        let rules = open_rules(group);

        if ctx.wants_any(SG_RULE_CHECKS) {
            judge_rules(out, &arn, id, name, vpc, &rules);
        }

        if is_default {
            any_default = true;
            let ingress = group.ip_permissions.as_deref().unwrap_or_default().len();
            let egress = group
                .ip_permissions_egress
                .as_deref()
                .unwrap_or_default()
                .len();
            out.verdict(
                DEFAULT_SG_CLOSED,
                &arn,
                ingress == 0 && egress == 0,
                "default security group has no inbound and no outbound rules",
                format!("default security group has {ingress} inbound and {egress} outbound rules"),
                json!({"group_id": id, "vpc_id": vpc, "inbound_rules": ingress,
                       "outbound_rules": egress}),
            );
        } else {
            any_custom = true;
            match (&in_use, enis) {
                (Some(used), _) => {
                    let attached = used.get(id).cloned().unwrap_or_default();
                    out.verdict(
                        SG_UNUSED,
                        &arn,
                        !attached.is_empty(),
                        format!("attached to {} network interface(s)", attached.len()),
                        "attached to no network interface",
                        json!({"group_id": id, "group_name": name, "vpc_id": vpc,
                               "network_interfaces": attached}),
                    );
                }
                (None, Some(Err(e))) => out.error_on(SG_UNUSED, &arn, e),
                (None, _) => {}
            }
        }
    }
    if !any_default {
        out.none_found(&[DEFAULT_SG_CLOSED], "default security groups");
    }
    if !any_custom {
        out.none_found(&[SG_UNUSED], "non-default security groups");
    }
}

/// The rule-based security group checks, each naming the internet-wide rules that decided it.
fn judge_rules(
    out: &mut Out,
    arn: &str,
    id: &str,
    name: &str,
    vpc: Option<&str>,
    rules: &[OpenRule],
) {
    let mut judge = |check: &'static str, what: &str, offending: Vec<(&OpenRule, Vec<i32>)>| {
        let evidence = json!({
            "group_id": id, "group_name": name, "vpc_id": vpc,
            "open_rules": offending.iter().map(|(r, ports)| {
                let mut e = r.evidence();
                if !ports.is_empty() {
                    e["ports"] = json!(ports);
                }
                e
            }).collect::<Vec<_>>(),
        });
        let fail_reason = offending
            .iter()
            .map(|(r, ports)| {
                if ports.is_empty() {
                    r.describe()
                } else {
                    let ports: Vec<String> = ports.iter().map(i32::to_string).collect();
                    format!("{} (reaches {})", r.describe(), ports.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        out.verdict(
            check,
            arn,
            offending.is_empty(),
            format!("no inbound rule opens {what} to the internet"),
            format!("{what} open to the internet: {fail_reason}"),
            evidence,
        );
    };
    let matching = |filter: &dyn Fn(&OpenRule) -> Vec<i32>| -> Vec<(&OpenRule, Vec<i32>)> {
        rules
            .iter()
            .filter_map(|r| {
                let ports = filter(r);
                (!ports.is_empty()).then_some((r, ports))
            })
            .collect()
    };
    let tcp_ports = |ports: &[i32]| {
        let ports = ports.to_vec();
        move |r: &OpenRule| -> Vec<i32> {
            ports
                .iter()
                .copied()
                .filter(|p| r.covers(Proto::Tcp, *p))
                .collect()
        }
    };
    let admin = |ipv6: bool| {
        move |r: &OpenRule| -> Vec<i32> {
            if r.ipv6 != ipv6 {
                return Vec::new();
            }
            ADMIN_PORTS
                .iter()
                .copied()
                .filter(|p| r.covers(Proto::Tcp, *p) || r.covers(Proto::Udp, *p))
                .collect()
        }
    };
    let db_ports: Vec<i32> = DATABASE_PORTS.iter().map(|(p, _)| *p).collect();

    judge(SG_SSH, "TCP port 22 (SSH)", matching(&tcp_ports(&[22])));
    judge(SG_RDP, "TCP port 3389 (RDP)", matching(&tcp_ports(&[3389])));
    judge(
        SG_ADMIN_V4,
        "port 22 or 3389 from 0.0.0.0/0",
        matching(&admin(false)),
    );
    judge(
        SG_ADMIN_V6,
        "port 22 or 3389 from ::/0",
        matching(&admin(true)),
    );
    judge(
        SG_ALL_PORTS,
        "every port",
        rules
            .iter()
            .filter(|r| r.all_ports())
            .map(|r| (r, Vec::new()))
            .collect(),
    );
    judge(
        SG_HIGH_RISK,
        "a high-risk TCP port",
        matching(&tcp_ports(HIGH_RISK_PORTS)),
    );
    judge(
        SG_DATABASE,
        "a database, cache or search TCP port",
        matching(&tcp_ports(&db_ports)),
    );
}

fn check_enis(ctx: &Ctx, out: &mut Out, enis: &[NetworkInterface]) {
    // Interfaces AWS services create and manage (NAT gateways, load balancers, endpoints) are
    // not the user's to configure.
    let user_managed: Vec<&NetworkInterface> = enis
        .iter()
        .filter(|e| e.requester_managed != Some(true))
        .collect();
    if user_managed.is_empty() {
        out.none_found(&[ENI_SRC_DST], "user-managed network interfaces");
        return;
    }
    for eni in user_managed {
        let id = eni.network_interface_id.as_deref().unwrap_or("unknown");
        let check = eni.source_dest_check;
        out.verdict(
            ENI_SRC_DST,
            &ctx.arn("ec2", &format!("network-interface/{id}")),
            check == Some(true),
            "source/destination check is enabled",
            match check {
                Some(_) => "source/destination check is disabled",
                None => "AWS reported no source/destination check setting",
            },
            json!({"network_interface_id": id, "SourceDestCheck": check,
                   "InterfaceType": eni.interface_type.as_ref().map(|t| t.as_str()),
                   "instance_id": eni.attachment.as_ref().and_then(|a| a.instance_id.as_deref())}),
        );
    }
}

fn check_volumes(ctx: &Ctx, out: &mut Out, volumes: &[Volume]) {
    let in_use: Vec<&Volume> = volumes
        .iter()
        .filter(|v| {
            v.state == Some(VolumeState::InUse)
                || !v.attachments.as_deref().unwrap_or_default().is_empty()
        })
        .collect();
    if in_use.is_empty() {
        out.none_found(&[VOLUME_ENCRYPTED], "EBS volumes in use");
        return;
    }
    for volume in in_use {
        let id = volume.volume_id.as_deref().unwrap_or("unknown");
        let arn = volume
            .volume_arn
            .clone()
            .unwrap_or_else(|| ctx.arn("ec2", &format!("volume/{id}")));
        let instances: Vec<&str> = volume
            .attachments
            .iter()
            .flatten()
            .filter_map(|a| a.instance_id.as_deref())
            .collect();
        out.verdict(
            VOLUME_ENCRYPTED,
            &arn,
            volume.encrypted == Some(true),
            format!(
                "volume is encrypted with {}",
                volume.kms_key_id.as_deref().unwrap_or("a KMS key")
            ),
            match volume.encrypted {
                Some(_) => "in-use volume is not encrypted",
                None => "AWS did not report whether the volume is encrypted",
            },
            json!({"volume_id": id, "Encrypted": volume.encrypted, "KmsKeyId": volume.kms_key_id,
                   "attached_to": instances}),
        );
    }
}

/// Snapshot and image ARNs carry no account: their ids are unique across AWS.
fn snapshot_arn(ctx: &Ctx, id: &str) -> String {
    format!("arn:{}:ec2:{}::snapshot/{id}", ctx.partition, ctx.region)
}

async fn check_snapshots(
    ctx: &Ctx,
    out: &mut Out<'_>,
    ec2: &aws_sdk_ec2::Client,
    snapshots: &[Snapshot],
    candidates: Fetched<Snapshot>,
) {
    if snapshots.is_empty() {
        out.none_found(SNAPSHOT_CHECKS, "EBS snapshots owned by the account");
        return;
    }
    for snapshot in snapshots {
        let id = snapshot.snapshot_id.as_deref().unwrap_or("unknown");
        out.verdict(
            SNAPSHOT_ENCRYPTED,
            &snapshot_arn(ctx, id),
            snapshot.encrypted == Some(true),
            format!(
                "snapshot is encrypted with {}",
                snapshot.kms_key_id.as_deref().unwrap_or("a KMS key")
            ),
            match snapshot.encrypted {
                Some(_) => "snapshot is not encrypted",
                None => "AWS did not report whether the snapshot is encrypted",
            },
            json!({"snapshot_id": id, "Encrypted": snapshot.encrypted,
                   "KmsKeyId": snapshot.kms_key_id, "volume_id": snapshot.volume_id}),
        );
    }
    let candidates = match candidates {
        None => return,
        Some(Err(e)) => {
            out.error(&[SNAPSHOT_NOT_PUBLIC], &e);
            return;
        }
        Some(Ok(list)) => list,
    };
    let candidate_ids: HashSet<String> = candidates
        .into_iter()
        .filter_map(|s| s.snapshot_id)
        .collect();
    let permissions: HashMap<String, Result<Vec<CreateVolumePermission>, AwsError>> =
        futures_util::stream::iter(candidate_ids.iter().cloned())
            .map(|id| async move {
                let result = ec2
                    .describe_snapshot_attribute()
                    .snapshot_id(&id)
                    .attribute(SnapshotAttributeName::CreateVolumePermission)
                    .send()
                    .await
                    .map(|r| r.create_volume_permissions.unwrap_or_default())
                    .map_err(AwsError::from);
                (id, result)
            })
            .buffer_unordered(8)
            .collect()
            .await;
    for snapshot in snapshots {
        let id = snapshot.snapshot_id.as_deref().unwrap_or("unknown");
        let arn = snapshot_arn(ctx, id);
        match permissions.get(id) {
            None => out.pass(
                SNAPSHOT_NOT_PUBLIC,
                &arn,
                "snapshot is not restorable by all accounts",
                json!({"snapshot_id": id, "restorable_by_all": false}),
            ),
            Some(Err(e)) => out.error_on(SNAPSHOT_NOT_PUBLIC, &arn, e),
            Some(Ok(perms)) => {
                let public = perms.iter().any(|p| p.group == Some(PermissionGroup::All));
                let accounts: Vec<&str> =
                    perms.iter().filter_map(|p| p.user_id.as_deref()).collect();
                out.verdict(
                    SNAPSHOT_NOT_PUBLIC,
                    &arn,
                    !public,
                    "createVolumePermission does not include the group all",
                    "snapshot is public: createVolumePermission grants the group all",
                    json!({"snapshot_id": id, "createVolumePermission": {
                        "groups": perms.iter().filter_map(|p| p.group.as_ref().map(|g| g.as_str()))
                            .collect::<Vec<_>>(),
                        "accounts": accounts}}),
                );
            }
        }
    }
}

fn check_images(ctx: &Ctx, out: &mut Out, images: &[Image]) {
    if images.is_empty() {
        out.none_found(&[AMI_NOT_PUBLIC], "AMIs owned by the account");
        return;
    }
    for image in images {
        let id = image.image_id.as_deref().unwrap_or("unknown");
        out.verdict(
            AMI_NOT_PUBLIC,
            &format!("arn:{}:ec2:{}::image/{id}", ctx.partition, ctx.region),
            image.public == Some(false),
            "image is private (launch permission not granted to all)",
            match image.public {
                Some(_) => "image is public: anyone can launch it",
                None => "AWS did not report whether the image is public",
            },
            json!({"image_id": id, "name": image.name, "Public": image.public}),
        );
    }
}

fn check_flow_logs(ctx: &Ctx, out: &mut Out, vpcs: &[Vpc], logs: &[FlowLog]) {
    if vpcs.is_empty() {
        out.none_found(&[FLOW_LOGS], "VPCs");
        return;
    }
    for vpc in vpcs {
        let id = vpc.vpc_id.as_deref().unwrap_or("unknown");
        let mine: Vec<&FlowLog> = logs
            .iter()
            .filter(|l| l.resource_id.as_deref() == Some(id))
            .collect();
        // Accepted-only logs miss the rejected connections an investigation looks for.
        let active: Vec<&str> = mine
            .iter()
            .filter(|l| l.flow_log_status.as_deref() == Some("ACTIVE"))
            .filter(|l| {
                matches!(
                    l.traffic_type.as_ref().map(|t| t.as_str()),
                    Some("ALL" | "REJECT")
                )
            })
            .filter_map(|l| l.flow_log_id.as_deref())
            .collect();
        out.verdict(
            FLOW_LOGS,
            &ctx.arn("ec2", &format!("vpc/{id}")),
            !active.is_empty(),
            format!("active flow log {} records the VPC's traffic", active.join(", ")),
            if mine.is_empty() {
                "VPC has no flow log".to_string()
            } else {
                "VPC's flow logs are inactive or record accepted traffic only".to_string()
            },
            json!({"vpc_id": id, "is_default": vpc.is_default, "flow_logs": mine.iter().map(|l| json!({
                "FlowLogId": l.flow_log_id, "FlowLogStatus": l.flow_log_status,
                "TrafficType": l.traffic_type.as_ref().map(|t| t.as_str()),
                "LogDestinationType": l.log_destination_type.as_ref().map(|t| t.as_str()),
            })).collect::<Vec<_>>()}),
        );
    }
}

fn check_subnets(ctx: &Ctx, out: &mut Out, subnets: &[Subnet]) {
    if subnets.is_empty() {
        out.none_found(&[SUBNET_PUBLIC_IP], "subnets");
        return;
    }
    for subnet in subnets {
        let id = subnet.subnet_id.as_deref().unwrap_or("unknown");
        let arn = subnet
            .subnet_arn
            .clone()
            .unwrap_or_else(|| ctx.arn("ec2", &format!("subnet/{id}")));
        let map = subnet.map_public_ip_on_launch;
        out.verdict(
            SUBNET_PUBLIC_IP,
            &arn,
            map == Some(false),
            "MapPublicIpOnLaunch is false",
            match map {
                Some(_) => "MapPublicIpOnLaunch is true: instances get a public IPv4 address",
                None => "AWS reported no MapPublicIpOnLaunch setting",
            },
            json!({"subnet_id": id, "vpc_id": subnet.vpc_id, "DefaultForAz": subnet.default_for_az,
                   "MapPublicIpOnLaunch": map}),
        );
    }
}

fn check_nacls(ctx: &Ctx, out: &mut Out, nacls: &[NetworkAcl]) {
    if nacls.is_empty() {
        out.none_found(NACL_CHECKS, "network ACLs");
        return;
    }
    let mut any_custom = false;
    for nacl in nacls {
        let id = nacl.network_acl_id.as_deref().unwrap_or("unknown");
        let arn = ctx.arn("ec2", &format!("network-acl/{id}"));
        let mut inbound: Vec<_> = nacl
            .entries
            .iter()
            .flatten()
            .filter(|e| e.egress != Some(true))
            .collect();
        inbound.sort_by_key(|e| e.rule_number.unwrap_or(i32::MAX));
        // Entries apply in rule-number order: per port and address family, the first entry
        // from the whole internet that matches decides whether the internet gets in.
        let mut open = Vec::new();
        for port in ADMIN_PORTS {
            for ipv6 in [false, true] {
                let decisive = inbound.iter().find(|e| {
                    let source = if ipv6 {
                        e.ipv6_cidr_block.as_deref() == Some("::/0")
                    } else {
                        e.cidr_block.as_deref() == Some("0.0.0.0/0")
                    };
                    let proto = Proto::parse(e.protocol.as_deref().unwrap_or("-1"));
                    let covers = match proto {
                        Proto::All => true,
                        Proto::Tcp => e.port_range.as_ref().is_none_or(|r| {
                            r.from.unwrap_or(0) <= *port && *port <= r.to.unwrap_or(65535)
                        }),
                        _ => false,
                    };
                    source && covers
                });
                if let Some(e) = decisive.filter(|e| e.rule_action == Some(RuleAction::Allow)) {
                    open.push(json!({"port": port, "RuleNumber": e.rule_number,
                        "Protocol": e.protocol, "CidrBlock": e.cidr_block,
                        "Ipv6CidrBlock": e.ipv6_cidr_block,
                        "PortRange": e.port_range.as_ref().map(|r| json!({"From": r.from, "To": r.to}))}));
                }
            }
        }
        let open_ports: std::collections::BTreeSet<i64> =
            open.iter().filter_map(|o| o["port"].as_i64()).collect();
        out.verdict(
            NACL_ADMIN,
            &arn,
            open.is_empty(),
            "no inbound allow entry lets the internet reach TCP 22 or 3389",
            format!(
                "inbound entries allow the internet to reach TCP {}",
                open_ports
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            json!({"network_acl_id": id, "vpc_id": nacl.vpc_id, "IsDefault": nacl.is_default,
                   "allowing_entries": open}),
        );

        if nacl.is_default != Some(true) {
            any_custom = true;
            let subnets: Vec<&str> = nacl
                .associations
                .iter()
                .flatten()
                .filter_map(|a| a.subnet_id.as_deref())
                .collect();
            out.verdict(
                NACL_UNUSED,
                &arn,
                !subnets.is_empty(),
                format!("associated with subnet(s) {}", subnets.join(", ")),
                "non-default network ACL is associated with no subnet",
                json!({"network_acl_id": id, "vpc_id": nacl.vpc_id, "subnets": subnets}),
            );
        }
    }
    if !any_custom {
        out.none_found(&[NACL_UNUSED], "non-default network ACLs");
    }
}

/// Some endpoints send empty strings rather than omitting a field.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

fn check_addresses(ctx: &Ctx, out: &mut Out, addresses: &[Address]) {
    if addresses.is_empty() {
        out.none_found(&[EIP_UNUSED], "Elastic IP addresses");
        return;
    }
    for address in addresses {
        let key = address
            .allocation_id
            .as_deref()
            .or(address.public_ip.as_deref())
            .unwrap_or("unknown");
        let attached_to =
            non_empty(&address.instance_id).or(non_empty(&address.network_interface_id));
        let used = non_empty(&address.association_id).is_some() || attached_to.is_some();
        out.verdict(
            EIP_UNUSED,
            &ctx.arn("ec2", &format!("elastic-ip/{key}")),
            used,
            format!(
                "address is associated with {}",
                attached_to.unwrap_or("a resource")
            ),
            "address is allocated but associated with nothing",
            json!({"AllocationId": address.allocation_id, "PublicIp": address.public_ip,
                   "AssociationId": address.association_id, "InstanceId": address.instance_id,
                   "NetworkInterfaceId": address.network_interface_id}),
        );
    }
}

fn check_launch_templates(ctx: &Ctx, out: &mut Out, versions: &[LaunchTemplateVersion]) {
    let defaults: Vec<&LaunchTemplateVersion> = versions
        .iter()
        .filter(|v| v.default_version != Some(false))
        .collect();
    if defaults.is_empty() {
        out.none_found(LT_CHECKS, "EC2 launch templates");
        return;
    }
    for version in defaults {
        let id = version.launch_template_id.as_deref().unwrap_or("unknown");
        let arn = ctx.arn("ec2", &format!("launch-template/{id}"));
        let data = version.launch_template_data.as_ref();
        let base = json!({"launch_template_id": id, "name": version.launch_template_name,
                          "default_version": version.version_number});

        let tokens = data
            .and_then(|d| d.metadata_options.as_ref())
            .and_then(|m| m.http_tokens.as_ref());
        let mut evidence = base.clone();
        evidence["HttpTokens"] = json!(tokens.map(|t| t.as_str()));
        out.verdict(
            LT_IMDSV2,
            &arn,
            tokens == Some(&LaunchTemplateHttpTokensState::Required),
            "default version requires IMDSv2 (HttpTokens required)",
            match tokens {
                Some(t) => format!("default version sets HttpTokens {t}, so IMDSv1 is accepted"),
                None => "default version sets no HttpTokens, so IMDSv1 may be accepted".to_string(),
            },
            evidence,
        );

        let public: Vec<i32> = data
            .and_then(|d| d.network_interfaces.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|n| n.associate_public_ip_address == Some(true))
            .map(|n| n.device_index.unwrap_or(0))
            .collect();
        let mut evidence = base;
        evidence["public_ip_device_indexes"] = json!(public);
        out.verdict(
            LT_NO_PUBLIC_IP,
            &arn,
            public.is_empty(),
            "no network interface of the default version sets AssociatePublicIpAddress",
            format!(
                "default version sets AssociatePublicIpAddress on network interface(s) at device index {}",
                public
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            evidence,
        );
    }
}
