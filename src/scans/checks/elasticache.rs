//! Amazon ElastiCache: backups, minor upgrades and subnet groups of cache clusters; encryption,
//! failover and AUTH of Redis OSS / Valkey replication groups.

use std::collections::HashMap;

use aws_sdk_elasticache::types::{AutomaticFailoverStatus, CacheCluster, ReplicationGroup};
use serde_json::json;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const BACKUPS: &str = "elasticache-redis-automatic-backups";
const MINOR_UPGRADE: &str = "elasticache-auto-minor-version-upgrade";
const SUBNET_GROUP: &str = "elasticache-not-default-subnet-group";
const AT_REST: &str = "elasticache-replication-group-encrypted-at-rest";
const IN_TRANSIT: &str = "elasticache-replication-group-encrypted-in-transit";
const FAILOVER: &str = "elasticache-replication-group-auto-failover";
const AUTH: &str = "elasticache-redis-auth-enabled";

const CLUSTER_CHECKS: &[&str] = &[BACKUPS, MINOR_UPGRADE, SUBNET_GROUP];
const GROUP_CHECKS: &[&str] = &[AT_REST, IN_TRANSIT, FAILOVER, AUTH];

// `run` names `CHECKS`, not `SERVICE.checks`: a future that refers to `SERVICE` cannot be
// checked for `Send` inside `SERVICE` itself (a cycle rustc rejects).
const CHECKS: &[&str] = &[
    BACKUPS,
    MINOR_UPGRADE,
    SUBNET_GROUP,
    AT_REST,
    IN_TRANSIT,
    FAILOVER,
    AUTH,
];

pub const SERVICE: Service = Service {
    id: "elasticache",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

fn is_redis(engine: Option<&str>) -> bool {
    matches!(engine, Some("redis" | "valkey"))
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_elasticache);

    // Clusters feed the cluster checks and the engine version of the AUTH check; replication
    // groups feed the group checks and the backup retention of their member clusters.
    let clusters: Option<Vec<CacheCluster>> =
        if ctx.wants_any(&[BACKUPS, MINOR_UPGRADE, SUBNET_GROUP, AUTH]) {
            match client
                .describe_cache_clusters()
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
            {
                Ok(c) => Some(c),
                Err(e) => {
                    // AUTH still judges groups on AuthTokenEnabled, engine version unknown.
                    out.error(&[BACKUPS, MINOR_UPGRADE, SUBNET_GROUP], &AwsError::from(e));
                    None
                }
            }
        } else {
            None
        };
    let groups: Option<Vec<ReplicationGroup>> =
        if ctx.wants_any(&[BACKUPS, AT_REST, IN_TRANSIT, FAILOVER, AUTH]) {
            match client
                .describe_replication_groups()
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
            {
                Ok(g) => Some(g),
                Err(e) => {
                    out.error(
                        &[BACKUPS, AT_REST, IN_TRANSIT, FAILOVER, AUTH],
                        &AwsError::from(e),
                    );
                    None
                }
            }
        } else {
            None
        };
    let group_by_id: HashMap<&str, &ReplicationGroup> = groups
        .iter()
        .flatten()
        .filter_map(|g| g.replication_group_id().map(|id| (id, g)))
        .collect();

    if let Some(clusters) = &clusters {
        if clusters.is_empty() {
            out.none_found(CLUSTER_CHECKS, "ElastiCache clusters");
        }
        let mut redis_clusters = 0;
        for c in clusters {
            let id = c.cache_cluster_id().unwrap_or("?");
            let arn = c
                .arn()
                .map(str::to_string)
                .unwrap_or_else(|| ctx.arn("elasticache", &format!("cluster:{id}")));

            if is_redis(c.engine()) {
                redis_clusters += 1;
                // Members of a replication group are backed up per group: the group's
                // retention is the one that counts (its replicas report 0 of their own).
                let group = c.replication_group_id().and_then(|g| group_by_id.get(g));
                let (retention, source) = match group {
                    Some(g) => (g.snapshot_retention_limit(), "replication group"),
                    None => (c.snapshot_retention_limit(), "cluster"),
                };
                // When the group listing failed, the account already carries that error.
                let group_unknown = c.replication_group_id().is_some() && groups.is_none();
                if !group_unknown {
                    out.verdict(
                        BACKUPS,
                        &arn,
                        retention.unwrap_or(0) >= 1,
                        format!(
                            "cluster {id} keeps automatic backups for {} day(s)",
                            retention.unwrap_or(0)
                        ),
                        format!("cluster {id} keeps no automatic backups (snapshot retention 0)"),
                        json!({"SnapshotRetentionLimit": retention, "from": source,
                               "ReplicationGroupId": c.replication_group_id()}),
                    );
                }
            }

            let upgrade = c.auto_minor_version_upgrade();
            out.verdict(
                MINOR_UPGRADE,
                &arn,
                upgrade == Some(true),
                format!("cluster {id} applies minor engine upgrades automatically"),
                format!("cluster {id} does not apply minor engine upgrades automatically"),
                json!({"AutoMinorVersionUpgrade": upgrade, "Engine": c.engine()}),
            );

            let subnet_group = c.cache_subnet_group_name();
            out.verdict(
                SUBNET_GROUP,
                &arn,
                subnet_group.is_some_and(|g| g != "default"),
                format!(
                    "cluster {id} uses subnet group {}",
                    subnet_group.unwrap_or_default()
                ),
                match subnet_group {
                    Some(_) => format!("cluster {id} uses the default subnet group"),
                    None => format!("cluster {id} reports no subnet group"),
                },
                json!({"CacheSubnetGroupName": subnet_group}),
            );
        }
        if !clusters.is_empty() && redis_clusters == 0 {
            out.none_found(&[BACKUPS], "Redis OSS or Valkey clusters");
        }
    }

    if let Some(groups) = &groups {
        let version_of: HashMap<&str, &str> = clusters
            .iter()
            .flatten()
            .filter_map(|c| Some((c.cache_cluster_id()?, c.engine_version()?)))
            .collect();
        let redis_groups: Vec<&ReplicationGroup> = groups
            .iter()
            // Groups report their engine only in newer API versions; before Valkey, every
            // replication group was Redis OSS.
            .filter(|g| g.engine().is_none() || is_redis(g.engine()))
            .collect();
        if redis_groups.is_empty() {
            out.none_found(GROUP_CHECKS, "ElastiCache replication groups");
        }
        for g in redis_groups {
            let id = g.replication_group_id().unwrap_or("?");
            let arn = g
                .arn()
                .map(str::to_string)
                .unwrap_or_else(|| ctx.arn("elasticache", &format!("replicationgroup:{id}")));

            let at_rest = g.at_rest_encryption_enabled();
            out.verdict(
                AT_REST,
                &arn,
                at_rest == Some(true),
                format!("replication group {id} is encrypted at rest"),
                format!("replication group {id} is not encrypted at rest"),
                json!({"AtRestEncryptionEnabled": at_rest, "KmsKeyId": g.kms_key_id()}),
            );

            let in_transit = g.transit_encryption_enabled();
            out.verdict(
                IN_TRANSIT,
                &arn,
                in_transit == Some(true),
                format!("replication group {id} encrypts traffic in transit (TLS)"),
                format!("replication group {id} does not encrypt traffic in transit"),
                json!({"TransitEncryptionEnabled": in_transit,
                       "TransitEncryptionMode": g.transit_encryption_mode().map(|m| m.as_str())}),
            );

            let failover = g.automatic_failover();
            out.verdict(
                FAILOVER,
                &arn,
                failover == Some(&AutomaticFailoverStatus::Enabled),
                format!("replication group {id} fails over automatically"),
                format!("replication group {id} does not fail over automatically"),
                json!({"AutomaticFailover": failover.map(|f| f.as_str())}),
            );

            if ctx.wants(AUTH) {
                let version = g
                    .member_clusters()
                    .iter()
                    .find_map(|m| version_of.get(m.as_str()).copied());
                let major = version.and_then(|v| v.split('.').next()?.parse::<u32>().ok());
                let auth = g.auth_token_enabled();
                let evidence = json!({"AuthTokenEnabled": auth, "EngineVersion": version,
                                      "UserGroupIds": g.user_group_ids()});
                match major {
                    Some(m) if m >= 6 => out.not_applicable(
                        AUTH,
                        &arn,
                        format!("replication group {id} runs engine {} (6.0 or later, which uses RBAC rather than AUTH tokens)", version.unwrap_or_default()),
                    ),
                    _ => out.verdict(
                        AUTH,
                        &arn,
                        auth == Some(true),
                        format!("replication group {id} requires a Redis AUTH token"),
                        match version {
                            Some(v) => format!("replication group {id} runs engine {v} without a Redis AUTH token"),
                            None => format!("replication group {id} has no Redis AUTH token and its engine version is unknown"),
                        },
                        evidence,
                    ),
                }
            }
        }
    }
    out.finish()
}
