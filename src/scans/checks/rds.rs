//! RDS: DB instances, DB clusters, snapshots, event subscriptions and proxies.
//!
//! DescribeDBInstances and DescribeDBClusters also return Neptune and DocumentDB resources, which
//! share the RDS API but are not RDS databases; they are left out. Settings that Aurora and
//! Multi-AZ DB clusters manage at cluster level (backups, deletion protection, copy tags, IAM
//! authentication, log exports, availability) are judged on the cluster, not on its members.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_rds::types::{DbCluster, DbInstance};
use serde_json::json;

use super::{AwsError, Ctx, Finding, Out, Service};
use crate::scan_client;

pub const SERVICE: Service = Service {
    id: "rds",
    global: false,
    checks: &[
        "rds-instance-storage-encrypted",
        "rds-instance-not-publicly-accessible",
        "rds-instance-backup-enabled",
        "rds-instance-multi-az",
        "rds-instance-deletion-protection",
        "rds-instance-auto-minor-version-upgrade",
        "rds-instance-iam-auth-enabled",
        "rds-instance-copy-tags-to-snapshot",
        "rds-instance-logs-to-cloudwatch",
        "rds-enhanced-monitoring-enabled",
        "rds-instance-in-vpc",
        "rds-instance-custom-admin-username",
        "rds-postgresql-logs-to-cloudwatch",
        "rds-sqlserver-logs-to-cloudwatch",
        "rds-mariadb-logs-to-cloudwatch",
        "rds-non-default-port",
        "rds-cluster-storage-encrypted",
        "rds-cluster-deletion-protection",
        "rds-cluster-iam-auth-enabled",
        "rds-cluster-multi-az",
        "rds-cluster-copy-tags-to-snapshot",
        "rds-cluster-auto-minor-version-upgrade",
        "rds-cluster-custom-admin-username",
        "rds-aurora-mysql-backtracking-enabled",
        "rds-aurora-mysql-audit-logs-to-cloudwatch",
        "rds-aurora-postgresql-logs-to-cloudwatch",
        "rds-postgresql-cluster-copy-tags-to-snapshot",
        "rds-mysql-cluster-copy-tags-to-snapshot",
        "rds-snapshot-not-public",
        "rds-snapshot-encrypted",
        "rds-instance-event-subscription",
        "rds-cluster-event-subscription",
        "rds-parameter-group-event-subscription",
        "rds-security-group-event-subscription",
        "rds-proxy-require-tls",
    ],
    run: |ctx| Box::pin(run(ctx)),
};

const INSTANCE_CHECKS: &[&str] = &[
    "rds-instance-storage-encrypted",
    "rds-instance-not-publicly-accessible",
    "rds-instance-backup-enabled",
    "rds-instance-multi-az",
    "rds-instance-deletion-protection",
    "rds-instance-auto-minor-version-upgrade",
    "rds-instance-iam-auth-enabled",
    "rds-instance-copy-tags-to-snapshot",
    "rds-instance-logs-to-cloudwatch",
    "rds-enhanced-monitoring-enabled",
    "rds-instance-in-vpc",
    "rds-instance-custom-admin-username",
    "rds-postgresql-logs-to-cloudwatch",
    "rds-sqlserver-logs-to-cloudwatch",
    "rds-mariadb-logs-to-cloudwatch",
];

const CLUSTER_CHECKS: &[&str] = &[
    "rds-cluster-storage-encrypted",
    "rds-cluster-deletion-protection",
    "rds-cluster-iam-auth-enabled",
    "rds-cluster-multi-az",
    "rds-cluster-copy-tags-to-snapshot",
    "rds-cluster-auto-minor-version-upgrade",
    "rds-cluster-custom-admin-username",
    "rds-aurora-mysql-backtracking-enabled",
    "rds-aurora-mysql-audit-logs-to-cloudwatch",
    "rds-aurora-postgresql-logs-to-cloudwatch",
    "rds-postgresql-cluster-copy-tags-to-snapshot",
    "rds-mysql-cluster-copy-tags-to-snapshot",
];

const SNAPSHOT_CHECKS: &[&str] = &["rds-snapshot-not-public", "rds-snapshot-encrypted"];

/// (check, source type, event categories the subscription must include).
const EVENT_CHECKS: &[(&str, &str, &[&str])] = &[
    (
        "rds-instance-event-subscription",
        "db-instance",
        &["maintenance", "configuration change", "failure"],
    ),
    (
        "rds-cluster-event-subscription",
        "db-cluster",
        &["maintenance", "failure"],
    ),
    (
        "rds-parameter-group-event-subscription",
        "db-parameter-group",
        &["configuration change"],
    ),
    (
        "rds-security-group-event-subscription",
        "db-security-group",
        &["configuration change", "failure"],
    ),
];

/// Engines sharing the RDS API that are not RDS databases.
fn is_rds_engine(engine: &str) -> bool {
    !matches!(engine, "neptune" | "docdb")
}

fn default_port(engine: &str) -> Option<i32> {
    match engine {
        "mysql" | "mariadb" | "aurora" | "aurora-mysql" => Some(3306),
        "postgres" | "aurora-postgresql" => Some(5432),
        e if e.starts_with("oracle") || e.starts_with("custom-oracle") => Some(1521),
        e if e.starts_with("sqlserver") || e.starts_with("custom-sqlserver") => Some(1433),
        e if e.starts_with("db2") => Some(50000),
        _ => None,
    }
}

fn missing_logs(exported: &[String], required: &[&str]) -> Vec<String> {
    required
        .iter()
        .filter(|t| !exported.iter().any(|e| e == *t))
        .map(|t| t.to_string())
        .collect()
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_rds);

    let cluster_needs_members = ctx.wants_any(&[
        "rds-cluster-multi-az",
        "rds-cluster-auto-minor-version-upgrade",
    ]);
    let need_instances = ctx.wants_any(INSTANCE_CHECKS)
        || ctx.wants_any(&["rds-non-default-port"])
        || cluster_needs_members
        || ctx.wants_any(&["rds-instance-event-subscription"]);
    let need_clusters = ctx.wants_any(CLUSTER_CHECKS)
        || ctx.wants_any(&["rds-non-default-port", "rds-cluster-event-subscription"]);

    let instances: Option<Vec<DbInstance>> = if need_instances {
        match client
            .describe_db_instances()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
        {
            Ok(all) => Some(
                all.into_iter()
                    .filter(|i| is_rds_engine(i.engine.as_deref().unwrap_or_default()))
                    .collect(),
            ),
            Err(e) => {
                let e = AwsError::from(e);
                out.error(INSTANCE_CHECKS, &e);
                out.error(&["rds-non-default-port"], &e);
                None
            }
        }
    } else {
        None
    };
    let clusters: Option<Vec<DbCluster>> = if need_clusters {
        match client
            .describe_db_clusters()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
        {
            Ok(all) => Some(
                all.into_iter()
                    .filter(|c| is_rds_engine(c.engine.as_deref().unwrap_or_default()))
                    .collect(),
            ),
            Err(e) => {
                out.error(CLUSTER_CHECKS, &AwsError::from(e));
                None
            }
        }
    } else {
        None
    };

    if let Some(instances) = &instances {
        evaluate_instances(ctx, &mut out, instances);
    }
    if let Some(clusters) = &clusters {
        evaluate_clusters(ctx, &mut out, clusters, instances.as_deref());
    }
    if ctx.wants("rds-non-default-port") {
        let none_instances = instances.as_ref().is_none_or(|i| i.is_empty());
        let none_clusters = clusters.as_ref().is_none_or(|c| c.is_empty());
        if none_instances && none_clusters && instances.is_some() && clusters.is_some() {
            out.none_found(&["rds-non-default-port"], "RDS DB instances or clusters");
        }
    }
    if ctx.wants_any(SNAPSHOT_CHECKS) {
        snapshots(ctx, &mut out, &client).await;
    }
    if ctx.wants_any(&EVENT_CHECKS.iter().map(|c| c.0).collect::<Vec<_>>()) {
        event_subscriptions(ctx, &mut out, &client, &instances, &clusters).await;
    }
    if ctx.wants("rds-proxy-require-tls") {
        proxies(ctx, &mut out, &client).await;
    }
    out.finish()
}

fn evaluate_instances(ctx: &Ctx, out: &mut Out<'_>, instances: &[DbInstance]) {
    if instances.is_empty() {
        out.none_found(INSTANCE_CHECKS, "RDS DB instances");
        return;
    }
    let mut engines_seen = BTreeSet::new();
    for db in instances {
        let id = db.db_instance_identifier.as_deref().unwrap_or_default();
        let arn = db
            .db_instance_arn
            .clone()
            .unwrap_or_else(|| ctx.arn("rds", &format!("db:{id}")));
        let engine = db.engine.as_deref().unwrap_or_default();
        engines_seen.insert(engine.to_string());
        let cluster = db.db_cluster_identifier.as_deref();
        // The cluster's verdict covers it; a member-level verdict would repeat or contradict it.
        let cluster_managed = |out: &mut Out<'_>, check: &'static str, what: &str| -> bool {
            if let Some(cluster) = cluster {
                out.not_applicable(
                    check,
                    &arn,
                    format!(
                        "{what} is set on DB cluster {cluster}, which this instance belongs to"
                    ),
                );
                true
            } else {
                false
            }
        };

        out.verdict(
            "rds-instance-storage-encrypted",
            &arn,
            db.storage_encrypted == Some(true),
            format!("storage of {id} is encrypted with KMS"),
            format!("storage of {id} is not encrypted"),
            json!({"StorageEncrypted": db.storage_encrypted, "KmsKeyId": db.kms_key_id}),
        );
        out.verdict(
            "rds-instance-not-publicly-accessible",
            &arn,
            db.publicly_accessible == Some(false),
            format!("{id} is not publicly accessible"),
            match db.publicly_accessible {
                Some(true) => format!("{id} is publicly accessible"),
                _ => format!("{id} does not report whether it is publicly accessible"),
            },
            json!({"PubliclyAccessible": db.publicly_accessible}),
        );
        if !cluster_managed(out, "rds-instance-backup-enabled", "backup retention") {
            let days = db.backup_retention_period.unwrap_or(0);
            out.verdict(
                "rds-instance-backup-enabled",
                &arn,
                days >= 1,
                format!("{id} keeps automated backups for {days} day(s)"),
                format!("automated backups of {id} are off (retention {days} days)"),
                json!({"BackupRetentionPeriod": db.backup_retention_period}),
            );
        }
        if !cluster_managed(out, "rds-instance-multi-az", "availability") {
            out.verdict(
                "rds-instance-multi-az",
                &arn,
                db.multi_az == Some(true),
                format!("{id} has a Multi-AZ standby"),
                format!("{id} runs in a single Availability Zone"),
                json!({"MultiAZ": db.multi_az, "AvailabilityZone": db.availability_zone,
                       "SecondaryAvailabilityZone": db.secondary_availability_zone}),
            );
        }
        if !cluster_managed(
            out,
            "rds-instance-deletion-protection",
            "deletion protection",
        ) {
            out.verdict(
                "rds-instance-deletion-protection",
                &arn,
                db.deletion_protection == Some(true),
                format!("{id} has deletion protection"),
                format!("{id} has no deletion protection"),
                json!({"DeletionProtection": db.deletion_protection}),
            );
        }
        out.verdict(
            "rds-instance-auto-minor-version-upgrade",
            &arn,
            db.auto_minor_version_upgrade == Some(true),
            format!("{id} applies minor engine upgrades automatically"),
            format!("{id} does not apply minor engine upgrades automatically"),
            json!({"AutoMinorVersionUpgrade": db.auto_minor_version_upgrade}),
        );
        if !cluster_managed(
            out,
            "rds-instance-iam-auth-enabled",
            "IAM database authentication",
        ) {
            if matches!(engine, "mysql" | "mariadb" | "postgres") {
                out.verdict(
                    "rds-instance-iam-auth-enabled",
                    &arn,
                    db.iam_database_authentication_enabled == Some(true),
                    format!("{id} accepts IAM database authentication"),
                    format!("IAM database authentication is off on {id}"),
                    json!({"IAMDatabaseAuthenticationEnabled": db.iam_database_authentication_enabled,
                           "Engine": engine}),
                );
            } else {
                out.not_applicable(
                    "rds-instance-iam-auth-enabled",
                    &arn,
                    format!("engine {engine} of {id} does not support IAM database authentication"),
                );
            }
        }
        if !cluster_managed(
            out,
            "rds-instance-copy-tags-to-snapshot",
            "copying tags to snapshots",
        ) {
            out.verdict(
                "rds-instance-copy-tags-to-snapshot",
                &arn,
                db.copy_tags_to_snapshot == Some(true),
                format!("{id} copies its tags to snapshots"),
                format!("{id} does not copy its tags to snapshots"),
                json!({"CopyTagsToSnapshot": db.copy_tags_to_snapshot}),
            );
        }
        let exported: Vec<String> = db
            .enabled_cloudwatch_logs_exports
            .clone()
            .unwrap_or_default();
        if !cluster_managed(out, "rds-instance-logs-to-cloudwatch", "log export") {
            match crate::aws_facts::rds_expected_logs(engine) {
                Some(required) => {
                    let missing = missing_logs(&exported, required);
                    out.verdict(
                        "rds-instance-logs-to-cloudwatch",
                        &arn,
                        missing.is_empty(),
                        format!("{id} exports {} to CloudWatch Logs", required.join(", ")),
                        format!(
                            "{id} does not export {} to CloudWatch Logs",
                            missing.join(", ")
                        ),
                        json!({"Engine": engine, "EnabledCloudwatchLogsExports": exported,
                               "expected": required}),
                    );
                }
                None => out.verdict(
                    "rds-instance-logs-to-cloudwatch",
                    &arn,
                    !exported.is_empty(),
                    format!("{id} exports {} to CloudWatch Logs", exported.join(", ")),
                    format!("{id} exports no logs to CloudWatch Logs"),
                    json!({"Engine": engine, "EnabledCloudwatchLogsExports": exported}),
                ),
            }
        }
        for (check, wanted_engine, required) in [
            (
                "rds-postgresql-logs-to-cloudwatch",
                "postgres",
                &["postgresql"][..],
            ),
            (
                "rds-sqlserver-logs-to-cloudwatch",
                "sqlserver",
                &["agent", "error"][..],
            ),
            (
                "rds-mariadb-logs-to-cloudwatch",
                "mariadb",
                &["audit", "error"][..],
            ),
        ] {
            if engine.starts_with(wanted_engine) {
                let missing = missing_logs(&exported, required);
                out.verdict(
                    check,
                    &arn,
                    missing.is_empty(),
                    format!("{id} exports {} to CloudWatch Logs", required.join(", ")),
                    format!(
                        "{id} does not export {} to CloudWatch Logs",
                        missing.join(", ")
                    ),
                    json!({"Engine": engine, "EnabledCloudwatchLogsExports": exported,
                           "expected": required}),
                );
            }
        }
        let interval = db.monitoring_interval.unwrap_or(0);
        out.verdict(
            "rds-enhanced-monitoring-enabled",
            &arn,
            interval > 0,
            format!("Enhanced Monitoring of {id} collects metrics every {interval} s"),
            format!("Enhanced Monitoring is off on {id}"),
            json!({"MonitoringInterval": db.monitoring_interval,
                   "MonitoringRoleArn": db.monitoring_role_arn}),
        );
        let vpc = db
            .db_subnet_group
            .as_ref()
            .and_then(|g| g.vpc_id.as_deref());
        out.verdict(
            "rds-instance-in-vpc",
            &arn,
            vpc.is_some_and(|v| !v.is_empty()),
            format!("{id} runs in {}", vpc.unwrap_or_default()),
            format!("{id} is not attached to a VPC"),
            json!({"DBSubnetGroup": db.db_subnet_group.as_ref().and_then(|g| g.db_subnet_group_name.clone()),
                   "VpcId": vpc}),
        );
        admin_username(
            out,
            "rds-instance-custom-admin-username",
            &arn,
            id,
            db.master_username.as_deref(),
        );
        let port = db.endpoint.as_ref().and_then(|e| e.port);
        non_default_port(out, &arn, id, engine, port);
    }
    for (check, wanted_engine, what) in [
        (
            "rds-postgresql-logs-to-cloudwatch",
            "postgres",
            "RDS for PostgreSQL DB instances",
        ),
        (
            "rds-sqlserver-logs-to-cloudwatch",
            "sqlserver",
            "RDS for SQL Server DB instances",
        ),
        (
            "rds-mariadb-logs-to-cloudwatch",
            "mariadb",
            "RDS for MariaDB DB instances",
        ),
    ] {
        if !engines_seen.iter().any(|e| e.starts_with(wanted_engine)) {
            out.none_found(&[check], what);
        }
    }
}

fn admin_username(
    out: &mut Out<'_>,
    check: &'static str,
    arn: &str,
    id: &str,
    username: Option<&str>,
) {
    match username {
        Some(name) => out.verdict(
            check,
            arn,
            !crate::aws_facts::is_default_admin(name),
            format!("{id} uses the custom master username {name}"),
            format!("{id} uses the well-known master username {name}"),
            json!({"MasterUsername": name}),
        ),
        None => out.fail(
            check,
            arn,
            format!("{id} reports no master username to judge"),
            json!({"MasterUsername": null}),
        ),
    }
}

fn non_default_port(out: &mut Out<'_>, arn: &str, id: &str, engine: &str, port: Option<i32>) {
    let check = "rds-non-default-port";
    match (default_port(engine), port) {
        (Some(default), Some(port)) => out.verdict(
            check,
            arn,
            port != default,
            format!("{id} listens on {port}, not the {engine} default {default}"),
            format!("{id} listens on the {engine} default port {default}"),
            json!({"Engine": engine, "Port": port, "default_port": default}),
        ),
        (None, _) => out.not_applicable(
            check,
            arn,
            format!("no well-known default port for engine {engine}"),
        ),
        (Some(_), None) => out.not_applicable(
            check,
            arn,
            format!("{id} has no endpoint yet, so no port to judge"),
        ),
    }
}

fn evaluate_clusters(
    ctx: &Ctx,
    out: &mut Out<'_>,
    clusters: &[DbCluster],
    instances: Option<&[DbInstance]>,
) {
    if clusters.is_empty() {
        out.none_found(CLUSTER_CHECKS, "RDS DB clusters");
        return;
    }
    let members: HashMap<&str, &DbInstance> = instances
        .unwrap_or_default()
        .iter()
        .filter_map(|i| Some((i.db_instance_identifier.as_deref()?, i)))
        .collect();
    let mut engines_seen = BTreeSet::new();
    for c in clusters {
        let id = c.db_cluster_identifier.as_deref().unwrap_or_default();
        let arn = c
            .db_cluster_arn
            .clone()
            .unwrap_or_else(|| ctx.arn("rds", &format!("cluster:{id}")));
        let engine = c.engine.as_deref().unwrap_or_default();
        engines_seen.insert(engine.to_string());
        let member_ids: Vec<&str> = c
            .db_cluster_members
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.db_instance_identifier.as_deref())
            .collect();

        out.verdict(
            "rds-cluster-storage-encrypted",
            &arn,
            c.storage_encrypted == Some(true),
            format!("storage of cluster {id} is encrypted with KMS"),
            format!("storage of cluster {id} is not encrypted"),
            json!({"StorageEncrypted": c.storage_encrypted, "KmsKeyId": c.kms_key_id}),
        );
        out.verdict(
            "rds-cluster-deletion-protection",
            &arn,
            c.deletion_protection == Some(true),
            format!("cluster {id} has deletion protection"),
            format!("cluster {id} has no deletion protection"),
            json!({"DeletionProtection": c.deletion_protection}),
        );
        out.verdict(
            "rds-cluster-iam-auth-enabled",
            &arn,
            c.iam_database_authentication_enabled == Some(true),
            format!("cluster {id} accepts IAM database authentication"),
            format!("IAM database authentication is off on cluster {id}"),
            json!({"IAMDatabaseAuthenticationEnabled": c.iam_database_authentication_enabled}),
        );
        if ctx.wants("rds-cluster-multi-az") {
            let zones: BTreeSet<&str> = member_ids
                .iter()
                .filter_map(|m| members.get(m)?.availability_zone.as_deref())
                .collect();
            let evidence = json!({"MultiAZ": c.multi_az, "members": member_ids,
                                  "member_zones": zones});
            if c.multi_az == Some(true) || zones.len() >= 2 {
                out.pass(
                    "rds-cluster-multi-az",
                    &arn,
                    format!(
                        "cluster {id} has members in {} Availability Zones",
                        zones.len().max(2)
                    ),
                    evidence,
                );
            } else if instances.is_none() && !member_ids.is_empty() {
                out.error_on(
                    "rds-cluster-multi-az",
                    &arn,
                    &"the zones of the cluster members could not be read (DescribeDBInstances failed)",
                );
            } else {
                out.fail(
                    "rds-cluster-multi-az",
                    &arn,
                    format!(
                        "cluster {id} has members in {} Availability Zone(s)",
                        zones.len()
                    ),
                    evidence,
                );
            }
        }
        out.verdict(
            "rds-cluster-copy-tags-to-snapshot",
            &arn,
            c.copy_tags_to_snapshot == Some(true),
            format!("cluster {id} copies its tags to snapshots"),
            format!("cluster {id} does not copy its tags to snapshots"),
            json!({"CopyTagsToSnapshot": c.copy_tags_to_snapshot}),
        );
        for (check, wanted_engine) in [
            ("rds-postgresql-cluster-copy-tags-to-snapshot", "postgres"),
            ("rds-mysql-cluster-copy-tags-to-snapshot", "mysql"),
        ] {
            if engine == wanted_engine {
                out.verdict(
                    check,
                    &arn,
                    c.copy_tags_to_snapshot == Some(true),
                    format!("{engine} cluster {id} copies its tags to snapshots"),
                    format!("{engine} cluster {id} does not copy its tags to snapshots"),
                    json!({"CopyTagsToSnapshot": c.copy_tags_to_snapshot, "Engine": engine}),
                );
            }
        }
        if ctx.wants("rds-cluster-auto-minor-version-upgrade") {
            // Aurora reports the setting on each member instance rather than on the cluster.
            let member_flags: Vec<Option<bool>> = member_ids
                .iter()
                .map(|m| members.get(m).and_then(|i| i.auto_minor_version_upgrade))
                .collect();
            let ok = match c.auto_minor_version_upgrade {
                Some(v) => v,
                None => !member_flags.is_empty() && member_flags.iter().all(|f| *f == Some(true)),
            };
            out.verdict(
                "rds-cluster-auto-minor-version-upgrade",
                &arn,
                ok,
                format!("cluster {id} applies minor engine upgrades automatically"),
                format!(
                    "cluster {id} does not apply minor engine upgrades automatically on all members"
                ),
                json!({"AutoMinorVersionUpgrade": c.auto_minor_version_upgrade,
                       "members": member_ids, "member_AutoMinorVersionUpgrade": member_flags}),
            );
        }
        admin_username(
            out,
            "rds-cluster-custom-admin-username",
            &arn,
            id,
            c.master_username.as_deref(),
        );
        let exported = c
            .enabled_cloudwatch_logs_exports
            .clone()
            .unwrap_or_default();
        if matches!(engine, "aurora" | "aurora-mysql") {
            let window = c.backtrack_window.unwrap_or(0);
            out.verdict(
                "rds-aurora-mysql-backtracking-enabled",
                &arn,
                window > 0,
                format!("cluster {id} can be backtracked {window} s"),
                format!("backtracking is off on cluster {id}"),
                json!({"BacktrackWindow": c.backtrack_window}),
            );
            out.verdict(
                "rds-aurora-mysql-audit-logs-to-cloudwatch",
                &arn,
                exported.iter().any(|l| l == "audit"),
                format!("cluster {id} exports its audit log to CloudWatch Logs"),
                format!("cluster {id} does not export its audit log to CloudWatch Logs"),
                json!({"EnabledCloudwatchLogsExports": exported}),
            );
        }
        if engine == "aurora-postgresql" {
            out.verdict(
                "rds-aurora-postgresql-logs-to-cloudwatch",
                &arn,
                exported.iter().any(|l| l == "postgresql"),
                format!("cluster {id} exports the postgresql log to CloudWatch Logs"),
                format!("cluster {id} does not export the postgresql log to CloudWatch Logs"),
                json!({"EnabledCloudwatchLogsExports": exported}),
            );
        }
        non_default_port(out, &arn, id, engine, c.port);
    }
    let has = |e: &[&str]| engines_seen.iter().any(|s| e.contains(&s.as_str()));
    if !has(&["aurora", "aurora-mysql"]) {
        out.none_found(
            &[
                "rds-aurora-mysql-backtracking-enabled",
                "rds-aurora-mysql-audit-logs-to-cloudwatch",
            ],
            "Aurora MySQL DB clusters",
        );
    }
    if !has(&["aurora-postgresql"]) {
        out.none_found(
            &["rds-aurora-postgresql-logs-to-cloudwatch"],
            "Aurora PostgreSQL DB clusters",
        );
    }
    if !has(&["postgres"]) {
        out.none_found(
            &["rds-postgresql-cluster-copy-tags-to-snapshot"],
            "RDS for PostgreSQL DB clusters",
        );
    }
    if !has(&["mysql"]) {
        out.none_found(
            &["rds-mysql-cluster-copy-tags-to-snapshot"],
            "RDS for MySQL DB clusters",
        );
    }
}

/// Whether a snapshot's `restore` attribute names `all`: anyone may copy or restore it.
fn restorable_by_all<'a>(attrs: impl Iterator<Item = (&'a str, &'a [String])>) -> Vec<String> {
    attrs
        .filter(|(name, _)| *name == "restore")
        .flat_map(|(_, values)| values.iter().cloned())
        .collect()
}

async fn snapshots(ctx: &Ctx, out: &mut Out<'_>, client: &aws_sdk_rds::Client) {
    let mut judged = 0usize;
    let mut manual = 0usize;
    let mut listed_all = true;

    match client
        .describe_db_snapshots()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(snaps) => {
            for s in snaps
                .iter()
                .filter(|s| is_rds_engine(s.engine.as_deref().unwrap_or_default()))
            {
                let id = s.db_snapshot_identifier.as_deref().unwrap_or_default();
                let arn = s
                    .db_snapshot_arn
                    .clone()
                    .unwrap_or_else(|| ctx.arn("rds", &format!("snapshot:{id}")));
                judged += 1;
                out.verdict(
                    "rds-snapshot-encrypted",
                    &arn,
                    s.encrypted == Some(true),
                    format!("snapshot {id} is encrypted with KMS"),
                    format!("snapshot {id} is not encrypted"),
                    json!({"Encrypted": s.encrypted, "KmsKeyId": s.kms_key_id,
                           "SnapshotType": s.snapshot_type}),
                );
                // Only manual snapshots can be shared.
                if s.snapshot_type.as_deref() != Some("manual")
                    || !ctx.wants("rds-snapshot-not-public")
                {
                    continue;
                }
                manual += 1;
                match client
                    .describe_db_snapshot_attributes()
                    .db_snapshot_identifier(id)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let attrs = r
                            .db_snapshot_attributes_result
                            .and_then(|r| r.db_snapshot_attributes)
                            .unwrap_or_default();
                        let restore = restorable_by_all(attrs.iter().map(|a| {
                            (
                                a.attribute_name.as_deref().unwrap_or_default(),
                                a.attribute_values.as_deref().unwrap_or_default(),
                            )
                        }));
                        snapshot_public_verdict(out, &arn, id, restore);
                    }
                    Err(e) => out.error_on("rds-snapshot-not-public", &arn, &AwsError::from(e)),
                }
            }
        }
        Err(e) => {
            listed_all = false;
            out.error(SNAPSHOT_CHECKS, &AwsError::from(e));
        }
    }

    match client
        .describe_db_cluster_snapshots()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(snaps) => {
            for s in snaps
                .iter()
                .filter(|s| is_rds_engine(s.engine.as_deref().unwrap_or_default()))
            {
                let id = s
                    .db_cluster_snapshot_identifier
                    .as_deref()
                    .unwrap_or_default();
                let arn = s
                    .db_cluster_snapshot_arn
                    .clone()
                    .unwrap_or_else(|| ctx.arn("rds", &format!("cluster-snapshot:{id}")));
                judged += 1;
                out.verdict(
                    "rds-snapshot-encrypted",
                    &arn,
                    s.storage_encrypted == Some(true),
                    format!("cluster snapshot {id} is encrypted with KMS"),
                    format!("cluster snapshot {id} is not encrypted"),
                    json!({"StorageEncrypted": s.storage_encrypted, "KmsKeyId": s.kms_key_id,
                           "SnapshotType": s.snapshot_type}),
                );
                if s.snapshot_type.as_deref() != Some("manual")
                    || !ctx.wants("rds-snapshot-not-public")
                {
                    continue;
                }
                manual += 1;
                match client
                    .describe_db_cluster_snapshot_attributes()
                    .db_cluster_snapshot_identifier(id)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let attrs = r
                            .db_cluster_snapshot_attributes_result
                            .and_then(|r| r.db_cluster_snapshot_attributes)
                            .unwrap_or_default();
                        let restore = restorable_by_all(attrs.iter().map(|a| {
                            (
                                a.attribute_name.as_deref().unwrap_or_default(),
                                a.attribute_values.as_deref().unwrap_or_default(),
                            )
                        }));
                        snapshot_public_verdict(out, &arn, id, restore);
                    }
                    Err(e) => out.error_on("rds-snapshot-not-public", &arn, &AwsError::from(e)),
                }
            }
        }
        Err(e) => {
            listed_all = false;
            out.error(SNAPSHOT_CHECKS, &AwsError::from(e));
        }
    }

    if listed_all {
        if judged == 0 {
            out.none_found(&["rds-snapshot-encrypted"], "RDS snapshots");
        }
        if manual == 0 {
            out.none_found(&["rds-snapshot-not-public"], "manual RDS snapshots");
        }
    }
}

fn snapshot_public_verdict(out: &mut Out<'_>, arn: &str, id: &str, restore: Vec<String>) {
    let public = restore.iter().any(|v| v == "all");
    out.verdict(
        "rds-snapshot-not-public",
        arn,
        !public,
        if restore.is_empty() {
            format!("snapshot {id} is not shared")
        } else {
            format!("snapshot {id} is shared only with named accounts")
        },
        format!("snapshot {id} can be restored by any AWS account"),
        json!({"restore": restore}),
    );
}

async fn event_subscriptions(
    ctx: &Ctx,
    out: &mut Out<'_>,
    client: &aws_sdk_rds::Client,
    instances: &Option<Vec<DbInstance>>,
    clusters: &Option<Vec<DbCluster>>,
) {
    let checks: Vec<&'static str> = EVENT_CHECKS.iter().map(|c| c.0).collect();
    // Subscriptions only matter where there are databases to watch; an unknown inventory (its
    // call failed) counts as present so the check is still decided.
    let has_instances = instances.as_ref().is_none_or(|i| !i.is_empty());
    let has_clusters = clusters.as_ref().is_none_or(|c| !c.is_empty());
    let subs = match client
        .describe_event_subscriptions()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(s) => s,
        Err(e) => {
            out.error(&checks, &AwsError::from(e));
            return;
        }
    };
    let resource = ctx.arn("rds", "es:*");
    for (check, source_type, required) in EVENT_CHECKS {
        let applies = match *source_type {
            "db-instance" => has_instances,
            "db-cluster" => has_clusters,
            _ => has_instances || has_clusters,
        };
        if !applies {
            out.none_found(&[check], "RDS databases");
            continue;
        }
        let covering: Vec<String> = subs
            .iter()
            .filter(|s| s.enabled == Some(true))
            .filter(|s| s.source_type.as_deref() == Some(*source_type))
            .filter(|s| {
                // An empty category list subscribes to every category.
                let cats = s.event_categories_list.as_deref().unwrap_or_default();
                cats.is_empty() || required.iter().all(|r| cats.iter().any(|c| c == r))
            })
            .filter_map(|s| s.cust_subscription_id.clone())
            .collect();
        let candidates: Vec<_> = subs
            .iter()
            .filter(|s| s.source_type.as_deref() == Some(*source_type))
            .map(|s| {
                json!({"CustSubscriptionId": s.cust_subscription_id, "Enabled": s.enabled,
                       "EventCategoriesList": s.event_categories_list,
                       "SourceIdsList": s.source_ids_list})
            })
            .collect();
        out.verdict(
            check,
            &resource,
            !covering.is_empty(),
            format!(
                "event subscription {} covers {source_type} events {}",
                covering.join(", "),
                required.join(", ")
            ),
            format!(
                "no enabled event subscription covers {source_type} events {}",
                required.join(", ")
            ),
            json!({"source_type": source_type, "required_categories": required,
                   "subscriptions": candidates}),
        );
    }
}

async fn proxies(ctx: &Ctx, out: &mut Out<'_>, client: &aws_sdk_rds::Client) {
    let proxies = match client
        .describe_db_proxies()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(p) => p,
        Err(e) => {
            out.error(&["rds-proxy-require-tls"], &AwsError::from(e));
            return;
        }
    };
    if proxies.is_empty() {
        out.none_found(&["rds-proxy-require-tls"], "RDS proxies");
    }
    for p in &proxies {
        let name = p.db_proxy_name.as_deref().unwrap_or_default();
        let arn = p
            .db_proxy_arn
            .clone()
            .unwrap_or_else(|| ctx.arn("rds", &format!("db-proxy:{name}")));
        out.verdict(
            "rds-proxy-require-tls",
            &arn,
            p.require_tls == Some(true),
            format!("proxy {name} requires TLS from clients"),
            format!("proxy {name} accepts clients without TLS"),
            json!({"RequireTLS": p.require_tls}),
        );
    }
}
