//! IAM (global): the root user, the password policy, users' credentials (from the credential
//! report), the policies of users, groups and roles (from one GetAccountAuthorizationDetails
//! pass), server certificates and identity federation.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_iam::types::{AssignmentStatusType, EntityType, PolicyScopeType, ReportStateType};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::{AwsError, Ctx, Finding, Out, Service};
use crate::scan_client;

pub const SERVICE: Service = Service {
    id: "iam",
    global: true,
    checks: &[
        "iam-root-no-access-keys",
        "iam-root-mfa-enabled",
        "iam-root-hardware-mfa-enabled",
        "iam-root-user-not-used",
        "iam-password-policy-strong",
        "iam-password-policy-pci-baseline",
        "iam-password-policy-min-length-14",
        "iam-password-policy-prevents-reuse",
        "iam-user-mfa-enabled",
        "iam-user-console-mfa-enabled",
        "iam-access-keys-rotated-90-days",
        "iam-unused-credentials-45-days-removed",
        "iam-unused-credentials-90-days-removed",
        "iam-user-single-active-access-key",
        "iam-user-no-access-key-at-creation",
        "iam-user-no-direct-policies",
        "iam-policy-no-full-admin-privileges",
        "iam-policy-no-service-wildcard-actions",
        "iam-policy-no-privilege-escalation",
        "kms-customer-policies-no-decrypt-all-keys",
        "kms-inline-policies-no-decrypt-all-keys",
        "iam-support-role-exists",
        "iam-cloudshell-full-access-restricted",
        "iam-no-expired-server-certificates",
        "iam-identity-federation-used",
    ],
    run: start,
};

fn start(ctx: &Ctx) -> BoxFuture<'_, Vec<Finding>> {
    Box::pin(run(ctx))
}

const SUMMARY_CHECKS: &[&str] = &[
    "iam-root-no-access-keys",
    "iam-root-mfa-enabled",
    "iam-root-hardware-mfa-enabled",
];
const PASSWORD_CHECKS: &[&str] = &[
    "iam-password-policy-strong",
    "iam-password-policy-pci-baseline",
    "iam-password-policy-min-length-14",
    "iam-password-policy-prevents-reuse",
];
const REPORT_CHECKS: &[&str] = &[
    "iam-root-user-not-used",
    "iam-user-mfa-enabled",
    "iam-user-console-mfa-enabled",
    "iam-access-keys-rotated-90-days",
    "iam-unused-credentials-45-days-removed",
    "iam-unused-credentials-90-days-removed",
    "iam-user-single-active-access-key",
    "iam-user-no-access-key-at-creation",
];
const AUTHORIZATION_CHECKS: &[&str] = &[
    "iam-user-no-direct-policies",
    "iam-policy-no-full-admin-privileges",
    "iam-policy-no-service-wildcard-actions",
    "iam-policy-no-privilege-escalation",
    "kms-customer-policies-no-decrypt-all-keys",
    "kms-inline-policies-no-decrypt-all-keys",
    "iam-support-role-exists",
    "iam-cloudshell-full-access-restricted",
    "iam-identity-federation-used",
];

/// CIS asks for 14 characters; the "strong" policy check uses the same minimum.
const STRONG_MIN_LENGTH: i32 = 14;
/// Prowler's default window for "root used recently".
const ROOT_USE_WINDOW_DAYS: i64 = 1;
/// A key created this close to its user is taken as issued by the console's user-creation flow.
const SETUP_KEY_WINDOW_MINUTES: i64 = 60;

type Iam = aws_sdk_iam::Client;

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let iam = scan_client!(ctx, aws_sdk_iam);
    let now = Utc::now();
    if ctx.wants_any(SUMMARY_CHECKS) {
        root_summary(ctx, &iam, &mut out).await;
    }
    if ctx.wants_any(PASSWORD_CHECKS) {
        password_policy(ctx, &iam, &mut out).await;
    }
    if ctx.wants_any(REPORT_CHECKS) {
        credential_report(ctx, &iam, &mut out, now).await;
    }
    if ctx.wants_any(AUTHORIZATION_CHECKS) {
        authorization(ctx, &iam, &mut out).await;
    }
    if ctx.wants("iam-no-expired-server-certificates") {
        server_certificates(&iam, &mut out, now).await;
    }
    out.finish()
}

async fn root_summary(ctx: &Ctx, iam: &Iam, out: &mut Out<'_>) {
    use aws_sdk_iam::types::SummaryKeyType;
    let account = ctx.account_arn();
    let summary = match iam.get_account_summary().send().await {
        Ok(r) => r.summary_map.unwrap_or_default(),
        Err(e) => {
            out.error(SUMMARY_CHECKS, &AwsError::from(e));
            return;
        }
    };
    // A missing flag is read as the unsafe value: keys present, MFA off.
    let keys = summary
        .get(&SummaryKeyType::AccountAccessKeysPresent)
        .copied();
    let mfa = summary.get(&SummaryKeyType::AccountMfaEnabled).copied();
    out.verdict(
        "iam-root-no-access-keys",
        &account,
        keys == Some(0),
        "the root user has no access keys",
        "the root user has access keys (AccountAccessKeysPresent)",
        json!({"AccountAccessKeysPresent": keys}),
    );
    out.verdict(
        "iam-root-mfa-enabled",
        &account,
        mfa == Some(1),
        "MFA is enabled for the root user",
        "the root user has no MFA device (AccountMFAEnabled is not 1)",
        json!({"AccountMFAEnabled": mfa}),
    );
    if !ctx.wants("iam-root-hardware-mfa-enabled") {
        return;
    }
    if mfa != Some(1) {
        out.fail(
            "iam-root-hardware-mfa-enabled",
            &account,
            "the root user has no MFA device at all",
            json!({"AccountMFAEnabled": mfa}),
        );
        return;
    }
    let mut devices = iam
        .list_virtual_mfa_devices()
        .assignment_status(AssignmentStatusType::Assigned)
        .into_paginator()
        .items()
        .send();
    let mut root_virtual = None;
    while let Some(device) = devices.next().await {
        match device {
            Ok(d) => {
                if d.user.as_ref().is_some_and(|u| u.arn == account)
                    || d.serial_number.ends_with(":mfa/root-account-mfa-device")
                {
                    root_virtual = Some(d.serial_number);
                }
            }
            Err(e) => {
                out.error(&["iam-root-hardware-mfa-enabled"], &AwsError::from(e));
                return;
            }
        }
    }
    out.verdict(
        "iam-root-hardware-mfa-enabled",
        &account,
        root_virtual.is_none(),
        "the root user's MFA device is not a virtual one",
        "the root user's MFA device is a virtual (app-based) device",
        json!({"AccountMFAEnabled": mfa, "root_virtual_mfa_device": root_virtual}),
    );
}

async fn password_policy(ctx: &Ctx, iam: &Iam, out: &mut Out<'_>) {
    use aws_sdk_iam::operation::get_account_password_policy::GetAccountPasswordPolicyError;
    let account = ctx.account_arn();
    let policy = match iam.get_account_password_policy().send().await {
        Ok(r) => r.password_policy,
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(GetAccountPasswordPolicyError::NoSuchEntityException(_))
            ) =>
        {
            None
        }
        Err(e) => {
            out.error(PASSWORD_CHECKS, &AwsError::from(e));
            return;
        }
    };
    let Some(p) = policy else {
        for check in PASSWORD_CHECKS {
            out.fail(
                check,
                &account,
                "the account has no IAM password policy (AWS defaults apply)",
                json!({"password_policy": null}),
            );
        }
        return;
    };
    let min = p.minimum_password_length.unwrap_or(0);
    let reuse = p.password_reuse_prevention.unwrap_or(0);
    let max_age = if p.expire_passwords {
        p.max_password_age
    } else {
        None
    };
    let evidence = json!({
        "MinimumPasswordLength": p.minimum_password_length,
        "RequireUppercaseCharacters": p.require_uppercase_characters,
        "RequireLowercaseCharacters": p.require_lowercase_characters,
        "RequireNumbers": p.require_numbers,
        "RequireSymbols": p.require_symbols,
        "PasswordReusePrevention": p.password_reuse_prevention,
        "ExpirePasswords": p.expire_passwords,
        "MaxPasswordAge": p.max_password_age,
    });

    let mut weak = Vec::new();
    if !p.require_uppercase_characters {
        weak.push("upper case not required".to_string());
    }
    if !p.require_lowercase_characters {
        weak.push("lower case not required".to_string());
    }
    if !p.require_numbers {
        weak.push("digits not required".to_string());
    }
    if !p.require_symbols {
        weak.push("symbols not required".to_string());
    }
    if min < STRONG_MIN_LENGTH {
        weak.push(format!("minimum length {min} < {STRONG_MIN_LENGTH}"));
    }
    if p.password_reuse_prevention.is_some() && reuse < 24 {
        weak.push(format!("reuse prevention {reuse} < 24"));
    }
    if max_age.is_some_and(|a| a > 90) {
        weak.push(format!("maximum age {} > 90 days", max_age.unwrap_or(0)));
    }
    out.verdict(
        "iam-password-policy-strong",
        &account,
        weak.is_empty(),
        "the password policy requires all character classes and a strong length",
        format!("the password policy is weak: {}", weak.join(", ")),
        evidence.clone(),
    );

    let mut pci = Vec::new();
    if !p.require_uppercase_characters || !p.require_lowercase_characters {
        pci.push("mixed case not required".to_string());
    }
    if !p.require_numbers {
        pci.push("digits not required".to_string());
    }
    if min < 7 {
        pci.push(format!("minimum length {min} < 7"));
    }
    if reuse < 4 {
        pci.push(format!("reuse prevention {reuse} < 4"));
    }
    match max_age {
        Some(a) if a <= 90 => {}
        Some(a) => pci.push(format!("maximum age {a} > 90 days")),
        None => pci.push("passwords never expire".to_string()),
    }
    out.verdict(
        "iam-password-policy-pci-baseline",
        &account,
        pci.is_empty(),
        "the password policy meets the PCI DSS 3.2.1 baseline",
        format!(
            "the password policy misses the PCI DSS baseline: {}",
            pci.join(", ")
        ),
        evidence.clone(),
    );
    out.verdict(
        "iam-password-policy-min-length-14",
        &account,
        min >= 14,
        format!("the minimum password length is {min}"),
        format!("the minimum password length is {min}, below 14"),
        evidence.clone(),
    );
    out.verdict(
        "iam-password-policy-prevents-reuse",
        &account,
        reuse >= 24,
        format!("the last {reuse} passwords cannot be reused"),
        format!("only the last {reuse} passwords are remembered, fewer than 24"),
        evidence,
    );
}

/// One row of the credential report, by column name.
struct Row<'a>(HashMap<&'a str, &'a str>);

impl Row<'_> {
    fn get(&self, column: &str) -> &str {
        self.0.get(column).copied().unwrap_or("")
    }

    fn flag(&self, column: &str) -> bool {
        self.get(column) == "true"
    }

    /// The column as a time; `N/A`, `no_information`, `not_supported` and empty are `None`.
    fn time(&self, column: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(self.get(column))
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    fn evidence(&self, columns: &[&str]) -> Value {
        let fields: serde_json::Map<String, Value> = columns
            .iter()
            .map(|c| (c.to_string(), Value::from(self.get(c))))
            .collect();
        Value::Object(fields)
    }
}

/// Asks IAM to (re)build the credential report, waits for it, and returns its CSV.
async fn fetch_credential_report(iam: &Iam) -> Result<String, AwsError> {
    for _ in 0..30 {
        let state = iam
            .generate_credential_report()
            .send()
            .await
            .map_err(AwsError::from)?
            .state;
        if state == Some(ReportStateType::Complete) {
            let report = iam
                .get_credential_report()
                .send()
                .await
                .map_err(AwsError::from)?;
            let content = report.content.ok_or_else(|| {
                AwsError("the credential report came back without content".into())
            })?;
            return Ok(String::from_utf8_lossy(content.as_ref()).into_owned());
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    Err(AwsError(
        "the credential report was not ready after 60 seconds".into(),
    ))
}

async fn credential_report(ctx: &Ctx, iam: &Iam, out: &mut Out<'_>, now: DateTime<Utc>) {
    let csv = match fetch_credential_report(iam).await {
        Ok(csv) => csv,
        Err(e) => {
            out.error(REPORT_CHECKS, &e);
            return;
        }
    };
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let rows: Vec<Row> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| Row(header.iter().copied().zip(l.split(',')).collect()))
        .collect();
    let (root, users): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|r| r.get("user") == "<root_account>");

    if ctx.wants("iam-root-user-not-used") {
        root_user_not_used(ctx, root.first(), out, now);
    }
    if users.is_empty() {
        out.none_found(&REPORT_CHECKS[1..], "IAM users");
        return;
    }
    let console_users = users.iter().filter(|u| u.flag("password_enabled")).count();
    let key_users = users
        .iter()
        .filter(|u| u.flag("access_key_1_active") || u.flag("access_key_2_active"))
        .count();
    if console_users == 0 {
        out.none_found(
            &[
                "iam-user-console-mfa-enabled",
                "iam-user-no-access-key-at-creation",
            ],
            "IAM users with a console password",
        );
    }
    if key_users == 0 {
        out.none_found(
            &["iam-access-keys-rotated-90-days"],
            "IAM users with an active access key",
        );
    }
    for user in &users {
        user_credentials(user, out, now);
    }
}

fn root_user_not_used(ctx: &Ctx, root: Option<&Row>, out: &mut Out<'_>, now: DateTime<Utc>) {
    let account = ctx.account_arn();
    let Some(root) = root else {
        out.error_on(
            "iam-root-user-not-used",
            &account,
            &"the credential report has no <root_account> row",
        );
        return;
    };
    let columns = [
        "password_last_used",
        "access_key_1_last_used_date",
        "access_key_2_last_used_date",
    ];
    let last = columns.iter().filter_map(|c| root.time(c)).max();
    let recent = last.is_some_and(|t| now - t < Duration::days(ROOT_USE_WINDOW_DAYS));
    out.verdict(
        "iam-root-user-not-used",
        &account,
        !recent,
        match last {
            Some(t) => format!("the root user was last used {}", t.to_rfc3339()),
            None => "the root user has no recorded use".to_string(),
        },
        format!(
            "the root user was used within the last {ROOT_USE_WINDOW_DAYS} day(s), at {}",
            last.map(|t| t.to_rfc3339()).unwrap_or_default()
        ),
        root.evidence(&columns),
    );
}

/// An active access key of a report row: (slot, created, last used).
type ActiveKey = (u8, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn active_keys(user: &Row) -> Vec<ActiveKey> {
    [1u8, 2]
        .into_iter()
        .filter(|n| user.flag(&format!("access_key_{n}_active")))
        .map(|n| {
            (
                n,
                user.time(&format!("access_key_{n}_last_rotated")),
                user.time(&format!("access_key_{n}_last_used_date")),
            )
        })
        .collect()
}

fn user_credentials(user: &Row, out: &mut Out<'_>, now: DateTime<Utc>) {
    let arn = user.get("arn");
    let name = user.get("user");
    let console = user.flag("password_enabled");
    let mfa = user.flag("mfa_active");
    let keys = active_keys(user);
    let key_columns = [
        "access_key_1_active",
        "access_key_1_last_rotated",
        "access_key_1_last_used_date",
        "access_key_2_active",
        "access_key_2_last_rotated",
        "access_key_2_last_used_date",
    ];

    out.verdict(
        "iam-user-mfa-enabled",
        arn,
        mfa,
        format!("user {name} has an MFA device"),
        format!("user {name} has no MFA device"),
        user.evidence(&["mfa_active", "password_enabled"]),
    );
    if console {
        out.verdict(
            "iam-user-console-mfa-enabled",
            arn,
            mfa,
            format!("console user {name} has an MFA device"),
            format!("user {name} has a console password but no MFA device"),
            user.evidence(&["password_enabled", "mfa_active"]),
        );
    }

    if !keys.is_empty() {
        // An active key without a creation date cannot be shown to be young.
        let old: Vec<String> = keys
            .iter()
            .filter(|(_, created, _)| created.is_none_or(|c| now - c > Duration::days(90)))
            .map(|(n, created, _)| match created {
                Some(c) => format!("key {n} created {}", c.to_rfc3339()),
                None => format!("key {n} has no creation date"),
            })
            .collect();
        out.verdict(
            "iam-access-keys-rotated-90-days",
            arn,
            old.is_empty(),
            format!("every active access key of {name} is younger than 90 days"),
            format!(
                "user {name} has active access keys older than 90 days: {}",
                old.join(", ")
            ),
            user.evidence(&key_columns),
        );
    }

    for (check, days) in [
        ("iam-unused-credentials-45-days-removed", 45),
        ("iam-unused-credentials-90-days-removed", 90),
    ] {
        let limit = Duration::days(days);
        let mut stale = Vec::new();
        if console {
            // A password never used counts from when it was set (or the user was created).
            let since = user
                .time("password_last_used")
                .or_else(|| user.time("password_last_changed"))
                .or_else(|| user.time("user_creation_time"));
            if since.is_none_or(|t| now - t >= limit) {
                stale.push("console password".to_string());
            }
        }
        for (n, created, used) in &keys {
            if used.or(*created).is_none_or(|t| now - t >= limit) {
                stale.push(format!("access key {n}"));
            }
        }
        let mut columns = vec![
            "password_enabled",
            "password_last_used",
            "password_last_changed",
        ];
        columns.extend_from_slice(&key_columns);
        out.verdict(
            check,
            arn,
            stale.is_empty(),
            format!("user {name} has no enabled credential idle for {days} days or more"),
            format!(
                "user {name} has credentials idle for {days} days or more: {}",
                stale.join(", ")
            ),
            user.evidence(&columns),
        );
    }

    out.verdict(
        "iam-user-single-active-access-key",
        arn,
        keys.len() < 2,
        format!("user {name} has {} active access key(s)", keys.len()),
        format!("user {name} has two active access keys"),
        user.evidence(&["access_key_1_active", "access_key_2_active"]),
    );

    if console {
        let created = user.time("user_creation_time");
        let setup: Vec<String> = keys
            .iter()
            .filter(|(_, key_created, used)| {
                used.is_none()
                    && match (created, key_created) {
                        (Some(u), Some(k)) => {
                            (*k - u).abs() <= Duration::minutes(SETUP_KEY_WINDOW_MINUTES)
                        }
                        _ => true,
                    }
            })
            .map(|(n, _, _)| format!("access key {n}"))
            .collect();
        let mut columns = vec!["user_creation_time", "password_enabled"];
        columns.extend_from_slice(&key_columns);
        out.verdict(
            "iam-user-no-access-key-at-creation",
            arn,
            setup.is_empty(),
            format!("console user {name} has no never-used access key issued at creation"),
            format!(
                "console user {name} has a never-used active key issued within {SETUP_KEY_WINDOW_MINUTES} minutes of the user's creation: {}",
                setup.join(", ")
            ),
            user.evidence(&columns),
        );
    }
}

/// A user, group or role with the policies attached to it.
struct Identity {
    kind: &'static str,
    name: String,
    arn: String,
    path: String,
    attached: Vec<String>,
    inline: Vec<(String, Option<String>)>,
}

fn identity_arn(ctx: &Ctx, kind: &str, path: &Option<String>, name: &str) -> String {
    format!(
        "arn:{}:iam::{}:{kind}{}{name}",
        ctx.partition,
        ctx.account_id,
        path.as_deref().unwrap_or("/")
    )
}

fn attached_arns(list: Option<Vec<aws_sdk_iam::types::AttachedPolicy>>) -> Vec<String> {
    list.unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.policy_arn)
        .collect()
}

fn inline_docs(
    list: Option<Vec<aws_sdk_iam::types::PolicyDetail>>,
) -> Vec<(String, Option<String>)> {
    list.unwrap_or_default()
        .into_iter()
        .map(|p| (p.policy_name.unwrap_or_default(), p.policy_document))
        .collect()
}

/// A customer managed policy and its default version's document.
struct ManagedPolicy {
    arn: String,
    name: String,
    document: Option<String>,
}

async fn authorization(ctx: &Ctx, iam: &Iam, out: &mut Out<'_>) {
    let mut identities = Vec::new();
    let mut policies = Vec::new();
    let mut pages = iam
        .get_account_authorization_details()
        .filter(EntityType::User)
        .filter(EntityType::Group)
        .filter(EntityType::Role)
        .filter(EntityType::LocalManagedPolicy)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                out.error(AUTHORIZATION_CHECKS, &AwsError::from(e));
                return;
            }
        };
        for u in page.user_detail_list.unwrap_or_default() {
            let name = u.user_name.unwrap_or_default();
            identities.push(Identity {
                kind: "user",
                arn: u
                    .arn
                    .unwrap_or_else(|| identity_arn(ctx, "user", &u.path, &name)),
                path: u.path.unwrap_or_default(),
                name,
                attached: attached_arns(u.attached_managed_policies),
                inline: inline_docs(u.user_policy_list),
            });
        }
        for g in page.group_detail_list.unwrap_or_default() {
            let name = g.group_name.unwrap_or_default();
            identities.push(Identity {
                kind: "group",
                arn: g
                    .arn
                    .unwrap_or_else(|| identity_arn(ctx, "group", &g.path, &name)),
                path: g.path.unwrap_or_default(),
                name,
                attached: attached_arns(g.attached_managed_policies),
                inline: inline_docs(g.group_policy_list),
            });
        }
        for r in page.role_detail_list.unwrap_or_default() {
            let name = r.role_name.unwrap_or_default();
            identities.push(Identity {
                kind: "role",
                arn: r
                    .arn
                    .unwrap_or_else(|| identity_arn(ctx, "role", &r.path, &name)),
                path: r.path.unwrap_or_default(),
                name,
                attached: attached_arns(r.attached_managed_policies),
                inline: inline_docs(r.role_policy_list),
            });
        }
        for p in page.policies.unwrap_or_default() {
            let Some(arn) = p.arn else { continue };
            let document = p
                .policy_version_list
                .unwrap_or_default()
                .into_iter()
                .find(|v| v.is_default_version)
                .and_then(|v| v.document);
            // Some endpoints leave PolicyName out; the ARN ends with it.
            let name = p
                .policy_name
                .unwrap_or_else(|| arn.rsplit('/').next().unwrap_or_default().to_string());
            policies.push(ManagedPolicy {
                arn,
                name,
                document,
            });
        }
    }

    identity_policies(&identities, out);
    attachment_checks(ctx, &identities, out);
    customer_policies(&policies, out);
    if ctx.wants("iam-policy-no-full-admin-privileges") {
        aws_managed_admin(iam, out).await;
    }
    if ctx.wants("iam-identity-federation-used") {
        federation(ctx, iam, &identities, out).await;
    }
}

/// Direct user policies, and the inline-policy checks per identity.
fn identity_policies(identities: &[Identity], out: &mut Out<'_>) {
    let users: Vec<&Identity> = identities.iter().filter(|i| i.kind == "user").collect();
    if users.is_empty() {
        out.none_found(&["iam-user-no-direct-policies"], "IAM users");
    }
    for u in users {
        let inline: Vec<&str> = u.inline.iter().map(|(n, _)| n.as_str()).collect();
        out.verdict(
            "iam-user-no-direct-policies",
            &u.arn,
            u.attached.is_empty() && inline.is_empty(),
            format!("user {} has no directly attached or inline policy", u.name),
            format!(
                "user {} has {} attached and {} inline policies of its own",
                u.name,
                u.attached.len(),
                inline.len()
            ),
            json!({"attached_managed_policies": u.attached, "inline_policies": inline}),
        );
    }

    let with_inline: Vec<&Identity> = identities.iter().filter(|i| !i.inline.is_empty()).collect();
    if with_inline.is_empty() {
        out.none_found(
            &["kms-inline-policies-no-decrypt-all-keys"],
            "inline policies on IAM users, groups or roles",
        );
    }
    for identity in with_inline {
        let mut docs = Vec::new();
        let mut unreadable = Vec::new();
        for (name, raw) in &identity.inline {
            match raw.as_deref().and_then(parse_policy) {
                Some(doc) => docs.push((name.as_str(), doc)),
                None => unreadable.push(name.as_str()),
            }
        }
        let what = format!("{} {}", identity.kind, identity.name);
        if !unreadable.is_empty() {
            let reason = format!(
                "inline policies of {what} could not be parsed: {}",
                unreadable.join(", ")
            );
            for check in [
                "iam-policy-no-full-admin-privileges",
                "iam-policy-no-privilege-escalation",
                "kms-inline-policies-no-decrypt-all-keys",
            ] {
                out.error_on(check, &identity.arn, &reason);
            }
            continue;
        }
        let findings = |f: fn(&Value) -> Vec<Value>| -> Vec<Value> {
            docs.iter()
                .flat_map(|(name, doc)| {
                    f(doc)
                        .into_iter()
                        .map(move |s| json!({"policy": name, "statement": s}))
                })
                .collect()
        };
        let admin = findings(full_admin_statements);
        out.verdict(
            "iam-policy-no-full-admin-privileges",
            &identity.arn,
            admin.is_empty(),
            format!("no inline policy of {what} allows \"*\" on \"*\""),
            format!("an inline policy of {what} allows every action on every resource"),
            json!({"inline_policies": docs.iter().map(|(n, _)| n).collect::<Vec<_>>(), "offending": admin}),
        );
        let decrypt = findings(decrypt_all_statements);
        out.verdict(
            "kms-inline-policies-no-decrypt-all-keys",
            &identity.arn,
            decrypt.is_empty(),
            format!("no inline policy of {what} allows KMS decryption on all keys"),
            format!("an inline policy of {what} allows kms:Decrypt or kms:ReEncryptFrom on \"*\""),
            json!({"inline_policies": docs.iter().map(|(n, _)| n).collect::<Vec<_>>(), "offending": decrypt}),
        );
        let combined: Vec<&Value> = docs.iter().map(|(_, d)| d).collect();
        let paths = escalation_paths(&combined);
        out.verdict(
            "iam-policy-no-privilege-escalation",
            &identity.arn,
            paths.is_empty(),
            format!("the inline policies of {what} allow no known privilege-escalation action set"),
            format!(
                "the inline policies of {what} allow privilege escalation: {}",
                paths.join("; ")
            ),
            json!({"inline_policies": docs.iter().map(|(n, _)| n).collect::<Vec<_>>(), "escalation_paths": paths}),
        );
    }
}

/// AWSSupportAccess somewhere, AWSCloudShellFullAccess nowhere.
fn attachment_checks(ctx: &Ctx, identities: &[Identity], out: &mut Out<'_>) {
    let support = format!("arn:{}:iam::aws:policy/AWSSupportAccess", ctx.partition);
    let cloudshell = format!(
        "arn:{}:iam::aws:policy/AWSCloudShellFullAccess",
        ctx.partition
    );
    let support_holders: Vec<&str> = identities
        .iter()
        .filter(|i| i.attached.contains(&support))
        .map(|i| i.arn.as_str())
        .collect();
    out.verdict(
        "iam-support-role-exists",
        &ctx.account_arn(),
        !support_holders.is_empty(),
        format!(
            "AWSSupportAccess is attached to {}",
            support_holders.join(", ")
        ),
        "AWSSupportAccess is attached to no role, user or group",
        json!({"policy": support, "attached_to": support_holders}),
    );
    if identities.is_empty() {
        out.none_found(
            &["iam-cloudshell-full-access-restricted"],
            "IAM users, groups or roles",
        );
    }
    for i in identities {
        out.verdict(
            "iam-cloudshell-full-access-restricted",
            &i.arn,
            !i.attached.contains(&cloudshell),
            format!(
                "{} {} does not have AWSCloudShellFullAccess",
                i.kind, i.name
            ),
            format!("{} {} has AWSCloudShellFullAccess attached", i.kind, i.name),
            json!({"attached_managed_policies": i.attached}),
        );
    }
}

fn customer_policies(policies: &[ManagedPolicy], out: &mut Out<'_>) {
    const CHECKS: [&str; 4] = [
        "iam-policy-no-full-admin-privileges",
        "iam-policy-no-service-wildcard-actions",
        "iam-policy-no-privilege-escalation",
        "kms-customer-policies-no-decrypt-all-keys",
    ];
    if policies.is_empty() {
        out.none_found(&[CHECKS[1], CHECKS[3]], "customer managed IAM policies");
    }
    for p in policies {
        let Some(doc) = p.document.as_deref().and_then(parse_policy) else {
            let reason = format!(
                "the default version of policy {} is missing or not valid JSON",
                p.name
            );
            for check in CHECKS {
                out.error_on(check, &p.arn, &reason);
            }
            continue;
        };
        let admin = full_admin_statements(&doc);
        out.verdict(
            CHECKS[0],
            &p.arn,
            admin.is_empty(),
            format!("policy {} does not allow \"*\" on \"*\"", p.name),
            format!("policy {} allows every action on every resource", p.name),
            json!({"offending": admin}),
        );
        let wildcards = service_wildcard_statements(&doc);
        out.verdict(
            CHECKS[1],
            &p.arn,
            wildcards.is_empty(),
            format!("policy {} grants no whole service", p.name),
            format!(
                "policy {} allows a whole service (\"service:*\", \"*\" or NotAction)",
                p.name
            ),
            json!({"offending": wildcards}),
        );
        let paths = escalation_paths(&[&doc]);
        out.verdict(
            CHECKS[2],
            &p.arn,
            paths.is_empty(),
            format!(
                "policy {} allows no known privilege-escalation action set",
                p.name
            ),
            format!(
                "policy {} allows privilege escalation: {}",
                p.name,
                paths.join("; ")
            ),
            json!({"escalation_paths": paths}),
        );
        let decrypt = decrypt_all_statements(&doc);
        out.verdict(
            CHECKS[3],
            &p.arn,
            decrypt.is_empty(),
            format!(
                "policy {} does not allow KMS decryption on all keys",
                p.name
            ),
            format!(
                "policy {} allows kms:Decrypt or kms:ReEncryptFrom on \"*\"",
                p.name
            ),
            json!({"offending": decrypt}),
        );
    }
}

/// AWS managed policies attached in this account that allow `*` on `*` (AdministratorAccess).
async fn aws_managed_admin(iam: &Iam, out: &mut Out<'_>) {
    const CHECK: &str = "iam-policy-no-full-admin-privileges";
    let mut attached = Vec::new();
    let mut items = iam
        .list_policies()
        .scope(PolicyScopeType::Aws)
        .only_attached(true)
        .into_paginator()
        .items()
        .send();
    while let Some(item) = items.next().await {
        match item {
            Ok(p) => {
                if let (Some(arn), Some(version)) = (p.arn, p.default_version_id) {
                    attached.push((arn, p.policy_name.unwrap_or_default(), version));
                }
            }
            Err(e) => {
                out.error(&[CHECK], &AwsError::from(e));
                return;
            }
        }
    }
    let versions = futures_util::stream::iter(attached)
        .map(|(arn, name, version)| async move {
            let doc = iam
                .get_policy_version()
                .policy_arn(&arn)
                .version_id(&version)
                .send()
                .await;
            (arn, name, doc)
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (arn, name, doc) in versions {
        let doc = match doc {
            Ok(r) => r
                .policy_version
                .and_then(|v| v.document)
                .as_deref()
                .and_then(parse_policy),
            Err(e) => {
                out.error_on(CHECK, &arn, &AwsError::from(e));
                continue;
            }
        };
        let Some(doc) = doc else {
            out.error_on(
                CHECK,
                &arn,
                &format!("the default version of {name} is missing or not valid JSON"),
            );
            continue;
        };
        let admin = full_admin_statements(&doc);
        out.verdict(
            CHECK,
            &arn,
            admin.is_empty(),
            format!("attached AWS managed policy {name} does not allow \"*\" on \"*\""),
            format!(
                "AWS managed policy {name} is attached and allows every action on every resource"
            ),
            json!({"offending": admin, "aws_managed": true}),
        );
    }
}

/// Workforce federation: a SAML provider or IAM Identity Center's reserved roles.
async fn federation(ctx: &Ctx, iam: &Iam, identities: &[Identity], out: &mut Out<'_>) {
    const CHECK: &str = "iam-identity-federation-used";
    let saml: Vec<String> = match iam.list_saml_providers().send().await {
        Ok(r) => r
            .saml_provider_list
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.arn)
            .collect(),
        Err(e) => {
            out.error(&[CHECK], &AwsError::from(e));
            return;
        }
    };
    let sso_roles: Vec<&str> = identities
        .iter()
        .filter(|i| i.kind == "role" && i.path.starts_with("/aws-reserved/sso.amazonaws.com/"))
        .map(|i| i.name.as_str())
        .collect();
    out.verdict(
        CHECK,
        &ctx.account_arn(),
        !saml.is_empty() || !sso_roles.is_empty(),
        "workforce access is federated (SAML provider or IAM Identity Center roles present)",
        "no SAML identity provider and no IAM Identity Center role: access relies on IAM users",
        json!({"saml_providers": saml, "identity_center_roles": sso_roles}),
    );
}

async fn server_certificates(iam: &Iam, out: &mut Out<'_>, now: DateTime<Utc>) {
    const CHECK: &str = "iam-no-expired-server-certificates";
    let mut items = iam
        .list_server_certificates()
        .into_paginator()
        .items()
        .send();
    let mut seen = 0;
    while let Some(item) = items.next().await {
        let cert = match item {
            Ok(c) => c,
            Err(e) => {
                out.error(&[CHECK], &AwsError::from(e));
                return;
            }
        };
        seen += 1;
        let expires = cert
            .expiration
            .and_then(|e| DateTime::<Utc>::from_timestamp(e.secs(), 0));
        let evidence = json!({"ServerCertificateName": cert.server_certificate_name,
                              "Expiration": expires.map(|e| e.to_rfc3339())});
        match expires {
            Some(e) => out.verdict(
                CHECK,
                &cert.arn,
                e > now,
                format!(
                    "server certificate {} expires {}",
                    cert.server_certificate_name,
                    e.to_rfc3339()
                ),
                format!(
                    "server certificate {} expired {}",
                    cert.server_certificate_name,
                    e.to_rfc3339()
                ),
                evidence,
            ),
            None => out.fail(
                CHECK,
                &cert.arn,
                format!(
                    "server certificate {} has no expiration date",
                    cert.server_certificate_name
                ),
                evidence,
            ),
        }
    }
    if seen == 0 {
        out.none_found(&[CHECK], "IAM server certificates");
    }
}

// ---- policy documents ----------------------------------------------------------------------

/// A policy document as AWS returns it: URL-encoded JSON from IAM, plain JSON from KMS and
/// some emulators.
pub(crate) fn parse_policy(raw: &str) -> Option<Value> {
    if raw.trim_start().starts_with('{') {
        return serde_json::from_str(raw).ok();
    }
    serde_json::from_str(&percent_decode(raw)?).ok()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The statements of a document (`Statement` may be one object or a list).
pub(crate) fn statements(doc: &Value) -> Vec<&Value> {
    match doc.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    }
}

/// A string-or-list field as a list of strings.
pub(crate) fn strings(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn is_allow(statement: &Value) -> bool {
    statement.get("Effect").and_then(Value::as_str) == Some("Allow")
}

/// IAM's wildcard match (`*`, `?`), case-insensitive as action names are.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((bp, bt)) = backtrack {
            pi = bp + 1;
            ti = bt + 1;
            backtrack = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether the statement's Action (or NotAction) covers `action`.
fn covers(statement: &Value, action: &str) -> bool {
    match statement.get("NotAction") {
        Some(not) => !strings(Some(not)).iter().any(|p| glob(p, action)),
        None => strings(statement.get("Action"))
            .iter()
            .any(|p| glob(p, action)),
    }
}

fn on_every_resource(statement: &Value) -> bool {
    strings(statement.get("Resource")).contains(&"*")
}

fn full_admin_statements(doc: &Value) -> Vec<Value> {
    statements(doc)
        .into_iter()
        .filter(|s| is_allow(s) && on_every_resource(s))
        .filter(|s| {
            strings(s.get("Action"))
                .iter()
                .any(|a| *a == "*" || *a == "*:*")
        })
        .cloned()
        .collect()
}

fn service_wildcard_statements(doc: &Value) -> Vec<Value> {
    statements(doc)
        .into_iter()
        .filter(|s| is_allow(s))
        .filter(|s| {
            s.get("NotAction").is_some()
                || strings(s.get("Action"))
                    .iter()
                    .any(|a| *a == "*" || a.split_once(':').is_some_and(|(_, op)| op == "*"))
        })
        .cloned()
        .collect()
}

fn decrypt_all_statements(doc: &Value) -> Vec<Value> {
    statements(doc)
        .into_iter()
        .filter(|s| is_allow(s) && on_every_resource(s))
        .filter(|s| covers(s, "kms:Decrypt") || covers(s, "kms:ReEncryptFrom"))
        .cloned()
        .collect()
}

/// Action sets that let a principal raise its own privileges (Rhino Security Labs' list, as
/// Prowler uses it).
const ESCALATIONS: &[&[&str]] = &[
    &["iam:CreatePolicyVersion"],
    &["iam:SetDefaultPolicyVersion"],
    &["iam:CreateAccessKey"],
    &["iam:CreateLoginProfile"],
    &["iam:UpdateLoginProfile"],
    &["iam:AttachUserPolicy"],
    &["iam:AttachGroupPolicy"],
    &["iam:AttachRolePolicy"],
    &["iam:PutUserPolicy"],
    &["iam:PutGroupPolicy"],
    &["iam:PutRolePolicy"],
    &["iam:AddUserToGroup"],
    &["iam:UpdateAssumeRolePolicy", "sts:AssumeRole"],
    &["iam:PassRole", "ec2:RunInstances"],
    &[
        "iam:PassRole",
        "lambda:CreateFunction",
        "lambda:InvokeFunction",
    ],
    &[
        "iam:PassRole",
        "lambda:CreateFunction",
        "lambda:CreateEventSourceMapping",
    ],
    &["lambda:UpdateFunctionCode"],
    &["iam:PassRole", "glue:CreateDevEndpoint"],
    &["glue:UpdateDevEndpoint"],
    &["iam:PassRole", "cloudformation:CreateStack"],
    &[
        "iam:PassRole",
        "datapipeline:CreatePipeline",
        "datapipeline:PutPipelineDefinition",
    ],
];

/// The escalation action sets the documents together allow; an unconditional Deny on every
/// resource removes an action.
fn escalation_paths(docs: &[&Value]) -> Vec<String> {
    let all: Vec<&Value> = docs.iter().flat_map(|d| statements(d)).collect();
    let allowed = |action: &str| {
        all.iter().any(|s| is_allow(s) && covers(s, action))
            && !all.iter().any(|s| {
                !is_allow(s)
                    && s.get("Condition").is_none()
                    && on_every_resource(s)
                    && covers(s, action)
            })
    };
    let mut memo: BTreeMap<&str, bool> = BTreeMap::new();
    ESCALATIONS
        .iter()
        .filter(|set| {
            set.iter()
                .all(|a| *memo.entry(a).or_insert_with(|| allowed(a)))
        })
        .map(|set| set.join(" + "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_iam_wildcards() {
        assert!(glob("kms:*", "kms:Decrypt"));
        assert!(glob("KMS:decrypt", "kms:Decrypt"));
        assert!(glob("kms:Re*From", "kms:ReEncryptFrom"));
        assert!(glob("*", "iam:PassRole"));
        assert!(!glob("kms:Encrypt*", "kms:Decrypt"));
        assert!(glob("iam:Pass?ole", "iam:PassRole"));
    }

    #[test]
    fn documents_decode_and_classify() {
        let raw = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22*%22%2C%22Resource%22%3A%22*%22%7D%7D";
        let doc = parse_policy(raw).expect("decodes");
        assert_eq!(full_admin_statements(&doc).len(), 1);
        assert_eq!(service_wildcard_statements(&doc).len(), 1);
        assert_eq!(decrypt_all_statements(&doc).len(), 1);
        assert!(!escalation_paths(&[&doc]).is_empty());

        let narrow = json!({"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"}]});
        assert!(full_admin_statements(&narrow).is_empty());
        assert!(service_wildcard_statements(&narrow).is_empty());
        assert!(decrypt_all_statements(&narrow).is_empty());
        assert!(escalation_paths(&[&narrow]).is_empty());

        let not_action =
            json!({"Statement": {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}});
        assert_eq!(service_wildcard_statements(&not_action).len(), 1);
        assert_eq!(decrypt_all_statements(&not_action).len(), 1);

        let denied = json!({"Statement": [
            {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
            {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"},
            {"Effect": "Deny", "Action": "ec2:*", "Resource": "*"}]});
        assert!(escalation_paths(&[&denied]).is_empty());
    }
}
