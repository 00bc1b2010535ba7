//! Facts AWS publishes that security checks compare against: ports Security Hub calls high-risk,
//! data-store ports, default master usernames, recommended TLS policies, the log types RDS
//! engines should export, Lambda runtime deprecation dates. The live checks of a scan and the
//! static checks of a template read them from here, so an account and a template are judged
//! by the same lists.

/// Security Hub EC2.19's high-risk TCP ports.
pub const HIGH_RISK_PORTS: &[i32] = &[
    20, 21, 22, 23, 25, 110, 135, 143, 445, 1433, 1434, 3000, 3306, 3389, 4333, 5000, 5432, 5500,
    5601, 8080, 8088, 8888, 9200, 9300,
];

/// Data-store TCP ports, with what listens there.
pub const DATABASE_PORTS: &[(i32, &str)] = &[
    (3306, "MySQL"),
    (5432, "PostgreSQL"),
    (1521, "Oracle"),
    (2483, "Oracle"),
    (1433, "SQL Server"),
    (1434, "SQL Server"),
    (27017, "MongoDB"),
    (27018, "MongoDB"),
    (6379, "Redis"),
    (11211, "Memcached"),
    (7199, "Cassandra"),
    (9160, "Cassandra"),
    (8888, "Cassandra"),
    (9200, "Elasticsearch"),
    (9300, "Elasticsearch"),
    (5601, "Kibana"),
    (9092, "Kafka"),
];

/// Master usernames that automated credential guessing tries first.
pub const DEFAULT_ADMIN_NAMES: &[&str] =
    &["admin", "administrator", "postgres", "root", "sa", "master"];

/// Whether a database master username is one of [`DEFAULT_ADMIN_NAMES`] (any case).
pub fn is_default_admin(name: &str) -> bool {
    DEFAULT_ADMIN_NAMES.contains(&name.to_ascii_lowercase().as_str())
}

/// CloudFront viewer security policies AWS currently recommends.
pub const RECOMMENDED_CLOUDFRONT_TLS: &[&str] = &["TLSv1.2_2021", "TLSv1.2_2025", "TLSv1.3_2025"];

/// Predefined load balancer policies limited to TLS 1.2 and 1.3 with forward-secret or strong
/// ciphers (the TLS13-1-0/1-1, TLS-1-1, FS-1-1 and 2016-08 families still allow TLS 1.0 or 1.1).
pub fn strong_elb_tls_policy(policy: &str) -> bool {
    [
        "ELBSecurityPolicy-TLS13-1-2-",
        "ELBSecurityPolicy-TLS13-1-3-",
        "ELBSecurityPolicy-TLS-1-2-",
        "ELBSecurityPolicy-FS-1-2-",
    ]
    .iter()
    .any(|p| policy.starts_with(p))
}

/// The log types Security Hub (RDS.9) expects an engine to publish to CloudWatch Logs; `None`
/// for an engine it sets no expectation for.
pub fn rds_expected_logs(engine: &str) -> Option<&'static [&'static str]> {
    match engine {
        "mysql" | "mariadb" => Some(&["audit", "error", "general", "slowquery"]),
        "postgres" => Some(&["postgresql", "upgrade"]),
        e if e.starts_with("oracle") => Some(&["alert", "audit", "trace", "listener"]),
        e if e.starts_with("sqlserver") => Some(&["error", "agent"]),
        e if e.starts_with("db2") => Some(&["diag.log", "notify.log"]),
        _ => None,
    }
}

/// Lambda runtimes and the day Lambda deprecated them (or has announced it will); a runtime is
/// unsupported from that day on. Runtimes not listed have no published deprecation date yet.
pub const LAMBDA_DEPRECATIONS: &[(&str, &str)] = &[
    ("nodejs", "2016-10-31"),
    ("nodejs4.3", "2020-03-05"),
    ("nodejs4.3-edge", "2019-04-30"),
    ("nodejs6.10", "2019-08-12"),
    ("nodejs8.10", "2020-03-06"),
    ("nodejs10.x", "2021-07-30"),
    ("nodejs12.x", "2023-03-31"),
    ("nodejs14.x", "2023-12-04"),
    ("nodejs16.x", "2024-06-12"),
    ("nodejs18.x", "2025-09-01"),
    ("nodejs20.x", "2026-04-30"),
    ("python2.7", "2021-07-15"),
    ("python3.6", "2022-07-18"),
    ("python3.7", "2023-12-04"),
    ("python3.8", "2024-10-14"),
    ("python3.9", "2025-12-15"),
    ("java8", "2024-01-08"),
    ("go1.x", "2024-01-08"),
    ("provided", "2024-01-08"),
    ("ruby2.5", "2021-07-30"),
    ("ruby2.7", "2023-12-07"),
    ("ruby3.2", "2026-03-31"),
    ("dotnetcore1.0", "2019-07-30"),
    ("dotnetcore2.0", "2019-05-30"),
    ("dotnetcore2.1", "2022-01-05"),
    ("dotnetcore3.1", "2023-04-03"),
    ("dotnet5.0", "2022-05-10"),
    ("dotnet6", "2024-12-20"),
    ("dotnet7", "2024-05-14"),
    ("dotnet8", "2026-11-10"),
];

/// The day `runtime` was or will be deprecated (`YYYY-MM-DD`), if Lambda has announced one.
pub fn lambda_deprecation(runtime: &str) -> Option<&'static str> {
    LAMBDA_DEPRECATIONS
        .iter()
        .find(|(r, _)| *r == runtime)
        .map(|(_, day)| *day)
}
