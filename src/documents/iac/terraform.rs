//! Terraform: HCL (`.tf`, through `hcl-rs`) and `terraform show -json` output (plan or state),
//! both into the shared value model. Blocks become a key holding a list of maps, as the plan
//! JSON writes them, so rules read both alike.

use std::collections::HashMap;

use hcl::expr::{
    BinaryOperator, Expression, ObjectKey, Operation, TemplateExpr, TraversalOperator,
    UnaryOperator,
};
use regex::Regex;

use super::value::{Cond, Value, from_json, json_depth, truncate};
use super::{Format, Model, Resource, resource_lines};
use crate::documents::analysis::{AnalysisError, Limits};

/// Stack for the HCL parser: its recursive descent is bounded by the nesting pre-check, and a
/// thread of our own keeps that bound independent of the caller's stack size.
const PARSER_STACK: usize = 16 * 1024 * 1024;

pub(crate) fn parse_hcl(bytes: &[u8], limits: &Limits) -> Result<Model, AnalysisError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| AnalysisError::Malformed(format!("the file is not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if nesting(text) > limits.max_depth {
        return Err(AnalysisError::TooComplex(format!(
            "the file nests deeper than {} levels",
            limits.max_depth
        )));
    }
    let body = parse_body(text)?;
    limits.check_time()?;

    let lines = resource_lines(text);
    let mut resources = Vec::new();
    for block in body.blocks() {
        limits.check_time()?;
        if block.identifier() != "resource" {
            continue;
        }
        let [ty, name] = block.labels() else {
            return Err(AnalysisError::Malformed(
                "a resource block needs a type and a name label".into(),
            ));
        };
        let (ty, name) = (ty.as_str(), name.as_str());
        let line = lines.get(&(ty, name)).copied();
        resources.push(Resource {
            name: format!("{ty}.{name}"),
            ty: ty.to_string(),
            line,
            props: body_value(block.body()),
        });
    }
    Ok(Model {
        format: Format::Tf,
        resources,
    })
}

/// Parses on a thread with a known stack; a parser panic becomes a clean error.
fn parse_body(text: &str) -> Result<hcl::Body, AnalysisError> {
    let parsed = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(PARSER_STACK)
            .spawn_scoped(s, || hcl::parse(text))
            .map(|h| h.join())
    });
    match parsed {
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(Ok(Err(e))) => Err(hcl_error(&e)),
        Ok(Err(_)) => Err(AnalysisError::Malformed(
            "the HCL parser failed on this file".into(),
        )),
        Err(e) => Err(AnalysisError::TooComplex(format!(
            "could not start the HCL parser: {e}"
        ))),
    }
}

fn hcl_error(e: &hcl::Error) -> AnalysisError {
    match e {
        hcl::Error::Parse(p) => AnalysisError::Malformed(format!(
            "HCL line {} column {}: {}",
            p.location().line(),
            p.location().column(),
            p.message()
        )),
        other => AnalysisError::Malformed(format!("HCL: {other}")),
    }
}

/// Deepest bracket nesting outside strings and comments: a cheap bound checked before the
/// recursive parser sees the text (template interpolations nest braces too, and are counted).
pub(crate) fn nesting(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_str = false,
                '$' | '%' if chars.peek() == Some(&'{') => {
                    chars.next();
                    depth += 1;
                    max = max.max(depth);
                    in_str = false;
                }
                '\n' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '{' | '[' | '(' => {
                depth += 1;
                max = max.max(depth);
            }
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            '!' | '-' => {
                // Chains of unary operators recurse in the parser like brackets do.
                let mut run = 1;
                while matches!(chars.peek(), Some('!') | Some('-')) {
                    chars.next();
                    run += 1;
                }
                max = max.max(depth + run);
            }
            _ => {}
        }
    }
    max
}

fn body_value(body: &hcl::Body) -> Value {
    let mut entries: Vec<(String, Value)> = Vec::new();
    for attr in body.attributes() {
        entries.push((attr.key().to_string(), expr_value(attr.expr())));
    }
    for block in body.blocks() {
        let (key, item) = match block.identifier() {
            // Meta blocks say nothing about the resource's settings.
            "lifecycle" | "provisioner" | "connection" | "timeouts" => continue,
            "dynamic" => {
                let Some(label) = block.labels().first() else {
                    continue;
                };
                let label = label.as_str().to_string();
                let item = Value::unknown(format!(
                    "dynamic \"{label}\" block (generated from for_each)"
                ));
                (label, item)
            }
            id => (id.to_string(), body_value(block.body())),
        };
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, Value::List(items))) => items.push(item),
            _ => entries.push((key, Value::List(vec![item]))),
        }
    }
    Value::Map(entries)
}

fn expr_text(e: &Expression) -> String {
    truncate(&e.to_string().replace('\n', " "), 90)
}

fn expr_value(e: &Expression) -> Value {
    match e {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(*b),
        Expression::Number(n) => Value::Num(n.as_f64().unwrap_or(0.0)),
        Expression::String(s) => Value::Str(s.clone()),
        Expression::Array(items) => Value::List(items.iter().map(expr_value).collect()),
        Expression::Object(obj) => Value::Map(
            obj.iter()
                .map(|(k, v)| {
                    let key = match k {
                        ObjectKey::Identifier(id) => id.to_string(),
                        ObjectKey::Expression(Expression::String(s)) => s.clone(),
                        ObjectKey::Expression(other) => expr_text(other),
                        _ => String::new(),
                    };
                    (key, expr_value(v))
                })
                .collect(),
        ),
        Expression::TemplateExpr(t) => {
            let raw = match t.as_ref() {
                TemplateExpr::QuotedString(s) => s.clone(),
                TemplateExpr::Heredoc(h) => h.template.clone(),
            };
            if raw.contains("${") || raw.contains("%{") {
                Value::opaque(expr_text(e))
            } else {
                Value::Str(raw)
            }
        }
        Expression::Parenthesis(inner) => expr_value(inner),
        Expression::Traversal(t) => traversal_value(t, e),
        Expression::Variable(v) => Value::unknown(v.to_string()),
        Expression::FuncCall(call) => {
            let name = call.name.to_string();
            match (name.as_str(), call.args.as_slice()) {
                // An encoded document is read as the structure it encodes (policies,
                // container definitions).
                ("jsonencode" | "tostring" | "tonumber" | "tobool" | "tolist" | "toset", [arg]) => {
                    expr_value(arg)
                }
                ("try" | "lookup" | "coalesce" | "one" | "can", _) => Value::unknown(expr_text(e)),
                _ => Value::opaque(expr_text(e)),
            }
        }
        Expression::Conditional(c) => {
            let (a, b) = (expr_value(&c.true_expr), expr_value(&c.false_expr));
            // `null` in a resource argument means "not set", as AWS::NoValue does.
            let branch = |v: Value| (v != Value::Null).then_some(v);
            Value::choose(
                expr_text(e),
                expr_text(&c.cond_expr),
                condition(&c.cond_expr),
                branch(a),
                branch(b),
            )
            .unwrap_or(Value::Null)
        }
        _ => Value::opaque(expr_text(e)),
    }
}

/// A predicate as a formula over its comparisons: `!`, `&&`, `||` and literals are read, so
/// `var.env != "prod"` is the negation of `var.env == "prod"`, not an unrelated question.
fn condition(e: &Expression) -> Cond {
    match e {
        Expression::Bool(b) => Cond::Const(*b),
        Expression::Parenthesis(inner) => condition(inner),
        Expression::Operation(op) => match op.as_ref() {
            Operation::Unary(u) if u.operator == UnaryOperator::Not => {
                Cond::Not(Box::new(condition(&u.expr)))
            }
            Operation::Binary(b) => {
                let (l, r) = (&b.lhs_expr, &b.rhs_expr);
                match b.operator {
                    BinaryOperator::And => Cond::And(vec![condition(l), condition(r)]),
                    BinaryOperator::Or => Cond::Or(vec![condition(l), condition(r)]),
                    BinaryOperator::Eq => equals(l, r),
                    BinaryOperator::NotEq => Cond::Not(Box::new(equals(l, r))),
                    _ => Cond::Atom(atom_key(e)),
                }
            }
            Operation::Unary(_) => Cond::Atom(atom_key(e)),
        },
        _ => Cond::Atom(atom_key(e)),
    }
}

/// `a == b`: decided when both sides are literals (of the same type: Terraform's `1 == "1"`
/// is false), else one atom whatever the order of sides.
fn equals(l: &Expression, r: &Expression) -> Cond {
    let (lv, rv) = (expr_value(l), expr_value(r));
    let literal = |v: &Value| {
        matches!(
            v,
            Value::Null | Value::Bool(_) | Value::Num(_) | Value::Str(_)
        )
    };
    if literal(&lv) && literal(&rv) {
        return Cond::Const(lv == rv);
    }
    Cond::equality(atom_key(l), atom_key(r))
}

/// A comparison's identity: the whole expression, never the shortened text of reasons.
fn atom_key(e: &Expression) -> String {
    e.to_string()
}

/// `aws_kms_key.main.arn` is a reference to a declared resource (present); `var.x`, `local.x`,
/// `module.x.y`, `each.value` may be anything, null included.
fn traversal_value(t: &hcl::expr::Traversal, whole: &Expression) -> Value {
    let text = expr_text(whole);
    let Expression::Variable(root) = &t.expr else {
        return Value::unknown(text);
    };
    let root = root.to_string();
    let attrs: Vec<String> = t
        .operators
        .iter()
        .filter_map(|op| match op {
            TraversalOperator::GetAttr(id) => Some(id.to_string()),
            _ => None,
        })
        .collect();
    match root.as_str() {
        "var" | "local" | "module" | "each" | "count" | "self" | "path" | "terraform" => {
            Value::unknown(text)
        }
        "data" => match (attrs.first(), attrs.get(1)) {
            (Some(ty), Some(name)) => Value::Ref {
                target: format!("data.{ty}.{name}"),
                expr: text,
            },
            _ => Value::unknown(text),
        },
        ty => match attrs.first() {
            Some(name) => Value::Ref {
                target: format!("{ty}.{name}"),
                expr: text,
            },
            None => Value::unknown(text),
        },
    }
}

/// A file with at least one top-level `resource`/`module`/`provider`/`variable`/`data` block
/// that parses as HCL.
pub(crate) fn looks_like_hcl(text: &str) -> bool {
    let Ok(re) = Regex::new(
        r#"(?m)^\s*(resource|data)\s+"[^"]+"\s+"[^"]+"\s*\{|^\s*(module|provider|variable)\s+"[^"]+"\s*\{"#,
    ) else {
        return false;
    };
    if !re.is_match(text) || nesting(text) > 64 {
        return false;
    }
    parse_body(text).is_ok_and(|b| {
        b.blocks().any(|bl| {
            matches!(
                bl.identifier(),
                "resource" | "module" | "provider" | "variable" | "data"
            )
        })
    })
}

/// `terraform show -json`: a plan (`planned_values`, with `resource_changes` saying what is
/// only known after apply) or a state (`values`).
pub(crate) fn parse_plan(bytes: &[u8], limits: &Limits) -> Result<Model, AnalysisError> {
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            AnalysisError::TooComplex(format!(
                "the plan nests deeper than {} levels",
                limits.max_depth
            ))
        } else {
            AnalysisError::Malformed(format!(
                "JSON line {} column {}: {}",
                e.line(),
                e.column(),
                e.to_string().split(" at line ").next().unwrap_or_default()
            ))
        }
    })?;
    if json_depth(&json) > limits.max_depth {
        return Err(AnalysisError::TooComplex(format!(
            "the plan nests deeper than {} levels",
            limits.max_depth
        )));
    }
    let root = json
        .pointer("/planned_values/root_module")
        .or_else(|| json.pointer("/values/root_module"))
        .ok_or_else(|| {
            AnalysisError::Malformed(
                "the plan has neither planned_values.root_module nor values.root_module".into(),
            )
        })?;

    let mut unknown: HashMap<&str, &serde_json::Value> = HashMap::new();
    if let Some(changes) = json.get("resource_changes").and_then(|c| c.as_array()) {
        for c in changes {
            if let (Some(addr), Some(au)) = (
                c.get("address").and_then(|a| a.as_str()),
                c.pointer("/change/after_unknown"),
            ) {
                unknown.insert(addr, au);
            }
        }
    }
    let mut refs: HashMap<String, Vec<(String, String)>> = HashMap::new();
    if let Some(cfg) = json.pointer("/configuration/root_module") {
        collect_refs(cfg, "", &mut refs, 0);
    }

    let mut resources = Vec::new();
    let mut stack = vec![root];
    while let Some(module) = stack.pop() {
        limits.check_time()?;
        if let Some(list) = module.get("resources").and_then(|r| r.as_array()) {
            for r in list {
                if r.get("mode").and_then(|m| m.as_str()) == Some("data") {
                    continue;
                }
                let (Some(addr), Some(ty)) = (
                    r.get("address").and_then(|a| a.as_str()),
                    r.get("type").and_then(|t| t.as_str()),
                ) else {
                    continue;
                };
                let mut props = r.get("values").map(from_json).unwrap_or(Value::Map(vec![]));
                if let Some(au) = unknown.get(addr) {
                    overlay_unknown(&mut props, au, "");
                }
                let config_addr = strip_index(addr);
                if let Some(attr_refs) = refs.get(&config_addr) {
                    for (attr, target) in attr_refs {
                        set_ref(&mut props, attr, target, addr);
                    }
                }
                resources.push(Resource {
                    name: addr.to_string(),
                    ty: ty.to_string(),
                    line: None,
                    props,
                });
            }
        }
        if let Some(children) = module.get("child_modules").and_then(|c| c.as_array()) {
            stack.extend(children.iter().rev());
        }
    }
    resources.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Model {
        format: Format::Tf,
        resources,
    })
}

/// `aws_instance.web[0]` → `aws_instance.web` (configuration addresses carry no index).
fn strip_index(addr: &str) -> String {
    let re = Regex::new(r"\[[^\]]*\]").ok();
    match re {
        Some(re) => re.replace_all(addr, "").into_owned(),
        None => addr.to_string(),
    }
}

/// Per configuration address, the top-level attributes that reference another resource (what
/// joins `aws_security_group_rule` to its group when the id is only known after apply).
fn collect_refs(
    module: &serde_json::Value,
    prefix: &str,
    out: &mut HashMap<String, Vec<(String, String)>>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    if let Some(list) = module.get("resources").and_then(|r| r.as_array()) {
        for r in list {
            let Some(addr) = r.get("address").and_then(|a| a.as_str()) else {
                continue;
            };
            let Some(exprs) = r.get("expressions").and_then(|e| e.as_object()) else {
                continue;
            };
            for (attr, e) in exprs {
                let Some(refs) = e.get("references").and_then(|r| r.as_array()) else {
                    continue;
                };
                // References list the attribute first, then the resource.
                let target = refs.iter().filter_map(|r| r.as_str()).find(|r| {
                    !r.starts_with("var.") && !r.starts_with("local.") && r.split('.').count() == 2
                });
                if let Some(t) = target {
                    out.entry(format!("{prefix}{addr}"))
                        .or_default()
                        .push((attr.clone(), format!("{prefix}{t}")));
                }
            }
        }
    }
    if let Some(calls) = module.get("module_calls").and_then(|m| m.as_object()) {
        for (name, call) in calls {
            if let Some(m) = call.get("module") {
                collect_refs(m, &format!("{prefix}module.{name}."), out, depth + 1);
            }
        }
    }
}

fn set_ref(props: &mut Value, attr: &str, target: &str, _addr: &str) {
    let Value::Map(entries) = props else {
        return;
    };
    let expr = format!("{target} (known after apply)");
    match entries.iter_mut().find(|(k, _)| k == attr) {
        Some((_, v)) if v.is_unresolved() || *v == Value::Null => {
            *v = Value::Ref {
                target: target.to_string(),
                expr,
            };
        }
        Some(_) => {}
        None => entries.push((
            attr.to_string(),
            Value::Ref {
                target: target.to_string(),
                expr,
            },
        )),
    }
}

/// Marks what the plan only knows after apply (`after_unknown: true`) as unknown.
fn overlay_unknown(v: &mut Value, au: &serde_json::Value, path: &str) {
    match au {
        serde_json::Value::Bool(true) => {
            *v = Value::opaque(format!("{path} (known after apply)"));
        }
        serde_json::Value::Object(o) => {
            if !matches!(v, Value::Map(_)) {
                *v = Value::Map(vec![]);
            }
            if let Value::Map(entries) = v {
                for (k, sub) in o {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match entries.iter_mut().find(|(ek, _)| ek == k) {
                        Some((_, ev)) => overlay_unknown(ev, sub, &p),
                        None if sub == &serde_json::Value::Bool(true) => entries
                            .push((k.clone(), Value::opaque(format!("{p} (known after apply)")))),
                        None => {}
                    }
                }
            }
        }
        serde_json::Value::Array(a) => {
            if let Value::List(items) = v {
                for (i, (item, sub)) in items.iter_mut().zip(a).enumerate() {
                    overlay_unknown(item, sub, &format!("{path}[{i}]"));
                }
            }
        }
        _ => {}
    }
}
