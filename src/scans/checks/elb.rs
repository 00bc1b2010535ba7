//! Elastic Load Balancing v2: Application, Network and Gateway Load Balancers, their attributes
//! and listeners. (Classic Load Balancers use another API and are not read here.)

use std::collections::{BTreeSet, HashMap};

use aws_sdk_elasticloadbalancingv2::types::{
    ActionTypeEnum, Listener, LoadBalancer, LoadBalancerTypeEnum, ProtocolEnum,
};
use serde_json::json;

use super::{AwsError, Ctx, Finding, Out, Service};
use crate::scan_client;

pub const SERVICE: Service = Service {
    id: "elb",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

// `run` names `CHECKS`, not `SERVICE.checks`: rustc cannot check a future that refers to
// `SERVICE` for `Send` inside `SERVICE` itself.
const CHECKS: &[&str] = &[
    "elbv2-listener-encrypted-protocol",
    "elb-v2-strong-tls-policy",
    "elb-deletion-protection-enabled",
    "elb-access-logging-enabled",
    "elb-alb-drops-invalid-headers",
    "elb-alb-http-redirects-to-https",
    "elb-v2-multi-az",
    "elb-alb-desync-mitigation",
];

const ATTRIBUTE_CHECKS: &[&str] = &[
    "elb-deletion-protection-enabled",
    "elb-access-logging-enabled",
    "elb-alb-drops-invalid-headers",
    "elb-alb-desync-mitigation",
];

const LISTENER_CHECKS: &[&str] = &[
    "elbv2-listener-encrypted-protocol",
    "elb-v2-strong-tls-policy",
    "elb-alb-http-redirects-to-https",
];

/// Checks that only concern Application Load Balancers.
const ALB_CHECKS: &[&str] = &[
    "elb-access-logging-enabled",
    "elb-alb-drops-invalid-headers",
    "elb-alb-desync-mitigation",
    "elb-alb-http-redirects-to-https",
];

fn protocol(l: &Listener) -> &str {
    l.protocol.as_ref().map(ProtocolEnum::as_str).unwrap_or("")
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_elasticloadbalancingv2);
    let lbs: Vec<LoadBalancer> = match client
        .describe_load_balancers()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(l) => l,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if lbs.is_empty() {
        out.none_found(CHECKS, "ELBv2 load balancers");
        return out.finish();
    }
    let mut albs = 0usize;
    let mut listeners_seen = 0usize;
    for lb in &lbs {
        let Some(arn) = lb.load_balancer_arn.as_deref() else {
            continue;
        };
        let name = lb.load_balancer_name.as_deref().unwrap_or(arn);
        let kind = lb.r#type.clone();
        let is_alb = kind == Some(LoadBalancerTypeEnum::Application);
        let kind_name = kind.as_ref().map(|k| k.as_str()).unwrap_or("unknown");
        if is_alb {
            albs += 1;
        }

        let zones: BTreeSet<&str> = lb
            .availability_zones
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|z| z.zone_name.as_deref())
            .collect();
        out.verdict(
            "elb-v2-multi-az",
            arn,
            zones.len() >= 2,
            format!("{name} serves {} Availability Zones", zones.len()),
            format!("{name} serves only {} Availability Zone(s)", zones.len()),
            json!({"AvailabilityZones": zones}),
        );

        let wants_attributes = ctx.wants("elb-deletion-protection-enabled")
            || (is_alb && ctx.wants_any(ATTRIBUTE_CHECKS));
        if wants_attributes {
            match client
                .describe_load_balancer_attributes()
                .load_balancer_arn(arn)
                .send()
                .await
            {
                Ok(r) => {
                    let attrs: HashMap<String, String> = r
                        .attributes
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|a| Some((a.key?, a.value?)))
                        .collect();
                    attribute_checks(&mut out, arn, name, is_alb, &attrs);
                }
                Err(e) => {
                    let e = AwsError::from(e);
                    for check in ATTRIBUTE_CHECKS {
                        if is_alb || *check == "elb-deletion-protection-enabled" {
                            out.error_on(check, arn, &e);
                        }
                    }
                }
            }
        }

        // Gateway Load Balancers carry GENEVE traffic that the listener checks do not judge.
        if kind == Some(LoadBalancerTypeEnum::Gateway) || !ctx.wants_any(LISTENER_CHECKS) {
            continue;
        }
        let listeners: Vec<Listener> = match client
            .describe_listeners()
            .load_balancer_arn(arn)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
        {
            Ok(l) => l,
            Err(e) => {
                let e = AwsError::from(e);
                for check in LISTENER_CHECKS {
                    if is_alb || !ALB_CHECKS.contains(check) {
                        out.error_on(check, arn, &e);
                    }
                }
                continue;
            }
        };
        listeners_seen += listeners.len();
        listener_checks(ctx, &mut out, arn, name, is_alb, kind_name, &listeners);
    }
    if albs == 0 {
        out.none_found(ALB_CHECKS, "Application Load Balancers");
    }
    if listeners_seen == 0 {
        out.none_found(
            &["elbv2-listener-encrypted-protocol"],
            "ALB or NLB listeners",
        );
    }
    out.finish()
}

fn attribute_checks(
    out: &mut Out<'_>,
    arn: &str,
    name: &str,
    is_alb: bool,
    attrs: &HashMap<String, String>,
) {
    let attr = |k: &str| attrs.get(k).map(String::as_str);
    let is_true = |k: &str| attr(k) == Some("true");
    out.verdict(
        "elb-deletion-protection-enabled",
        arn,
        is_true("deletion_protection.enabled"),
        format!("{name} has deletion protection"),
        format!("{name} has no deletion protection"),
        json!({"deletion_protection.enabled": attr("deletion_protection.enabled")}),
    );
    if !is_alb {
        return;
    }
    out.verdict(
        "elb-access-logging-enabled",
        arn,
        is_true("access_logs.s3.enabled"),
        format!(
            "{name} writes access logs to s3://{}",
            attr("access_logs.s3.bucket").unwrap_or_default()
        ),
        format!("access logging is off on {name}"),
        json!({"access_logs.s3.enabled": attr("access_logs.s3.enabled"),
               "access_logs.s3.bucket": attr("access_logs.s3.bucket")}),
    );
    out.verdict(
        "elb-alb-drops-invalid-headers",
        arn,
        is_true("routing.http.drop_invalid_header_fields.enabled"),
        format!("{name} drops invalid HTTP header fields"),
        format!("{name} forwards invalid HTTP header fields to targets"),
        json!({"routing.http.drop_invalid_header_fields.enabled":
               attr("routing.http.drop_invalid_header_fields.enabled")}),
    );
    let mode = attr("routing.http.desync_mitigation_mode");
    out.verdict(
        "elb-alb-desync-mitigation",
        arn,
        matches!(mode, Some("defensive" | "strictest")),
        format!(
            "desync mitigation of {name} is {}",
            mode.unwrap_or_default()
        ),
        match mode {
            Some(m) => format!("desync mitigation of {name} is {m}"),
            None => format!("{name} reports no desync mitigation mode"),
        },
        json!({"routing.http.desync_mitigation_mode": mode}),
    );
}

fn listener_checks(
    ctx: &Ctx,
    out: &mut Out<'_>,
    arn: &str,
    name: &str,
    is_alb: bool,
    kind: &str,
    listeners: &[Listener],
) {
    let summary: Vec<_> = listeners
        .iter()
        .map(|l| {
            json!({"ListenerArn": l.listener_arn, "Port": l.port, "Protocol": protocol(l),
                        "SslPolicy": l.ssl_policy})
        })
        .collect();

    for l in listeners {
        let larn = l
            .listener_arn
            .clone()
            .unwrap_or_else(|| ctx.arn("elasticloadbalancing", "listener/unknown"));
        let proto = protocol(l);
        let (ok, wanted) = if is_alb {
            (proto == "HTTPS", "HTTPS")
        } else {
            (proto == "TLS", "TLS")
        };
        out.verdict(
            "elbv2-listener-encrypted-protocol",
            &larn,
            ok,
            format!(
                "listener on port {} of {name} uses {proto}",
                l.port.unwrap_or(0)
            ),
            format!(
                "listener on port {} of {kind} load balancer {name} uses {proto}, not {wanted}",
                l.port.unwrap_or(0)
            ),
            json!({"Protocol": proto, "Port": l.port, "LoadBalancerType": kind}),
        );
    }

    let tls: Vec<&Listener> = listeners
        .iter()
        .filter(|l| matches!(protocol(l), "HTTPS" | "TLS"))
        .collect();
    if tls.is_empty() {
        out.not_applicable(
            "elb-v2-strong-tls-policy",
            arn,
            format!("{name} has no HTTPS or TLS listener"),
        );
    } else {
        let weak: Vec<String> = tls
            .iter()
            .filter(|l| {
                !l.ssl_policy
                    .as_deref()
                    .is_some_and(crate::aws_facts::strong_elb_tls_policy)
            })
            .map(|l| {
                format!(
                    "port {} ({})",
                    l.port.unwrap_or(0),
                    l.ssl_policy.as_deref().unwrap_or("no policy")
                )
            })
            .collect();
        out.verdict(
            "elb-v2-strong-tls-policy",
            arn,
            weak.is_empty(),
            format!("every TLS listener of {name} uses a TLS 1.2+ policy"),
            format!(
                "TLS listeners of {name} allow protocols older than TLS 1.2: {}",
                weak.join(", ")
            ),
            json!({"listeners": summary}),
        );
    }

    if is_alb {
        let not_redirecting: Vec<i32> = listeners
            .iter()
            .filter(|l| protocol(l) == "HTTP")
            .filter(|l| !redirects_to_https(l))
            .map(|l| l.port.unwrap_or(0))
            .collect();
        let http = listeners.iter().filter(|l| protocol(l) == "HTTP").count();
        out.verdict(
            "elb-alb-http-redirects-to-https",
            arn,
            not_redirecting.is_empty(),
            if http == 0 {
                format!("{name} has no HTTP listener")
            } else {
                format!("every HTTP listener of {name} redirects to HTTPS")
            },
            format!(
                "HTTP listeners of {name} on ports {not_redirecting:?} serve clear text instead of redirecting to HTTPS"
            ),
            json!({"listeners": listeners.iter().map(|l| json!({
                "Port": l.port, "Protocol": protocol(l),
                "DefaultActions": l.default_actions.as_deref().unwrap_or_default().iter().map(|a| json!({
                    "Type": a.r#type.as_ref().map(|t| t.as_str()),
                    "RedirectProtocol": a.redirect_config.as_ref().and_then(|r| r.protocol.clone()),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()}),
        );
    }
}

fn redirects_to_https(l: &Listener) -> bool {
    let actions = l.default_actions.as_deref().unwrap_or_default();
    !actions.is_empty()
        && actions.iter().all(|a| {
            a.r#type == Some(ActionTypeEnum::Redirect)
                && a.redirect_config
                    .as_ref()
                    .and_then(|r| r.protocol.as_deref())
                    == Some("HTTPS")
        })
}
