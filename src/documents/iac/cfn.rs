//! CloudFormation: YAML (short-form tags such as `!Ref`, carried by `serde_yaml_ng`'s
//! `Value::Tagged`) or JSON (long forms `{"Ref": …}`, `{"Fn::If": …}`), resolved into the shared
//! value model as far as the template alone allows.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use regex::Regex;
use serde_yaml_ng::Value as Y;

use super::value::{Cond, Value, json_depth, truncate};
use super::{Format, Model, Resource, find_line, key_lines};
use crate::documents::analysis::{AnalysisError, Limits};

/// Parses a template (YAML or JSON) into resources.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Model, AnalysisError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| AnalysisError::Malformed(format!("the template is not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_json = text.trim_start().starts_with('{');
    let root = if is_json {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            if e.to_string().contains("recursion limit") {
                too_deep(limits)
            } else {
                AnalysisError::Malformed(format!(
                    "JSON line {} column {}: {}",
                    e.line(),
                    e.column(),
                    strip_position(&e.to_string())
                ))
            }
        })?;
        if json_depth(&json) > limits.max_depth {
            return Err(too_deep(limits));
        }
        json_to_yaml(&json)
    } else {
        let y: Y = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(&e, limits))?;
        y
    };
    if yaml_depth(&root) > limits.max_depth {
        return Err(too_deep(limits));
    }
    limits.check_time()?;
    let Y::Mapping(top) = &root else {
        return Err(AnalysisError::Malformed(
            "a CloudFormation template is a mapping with a Resources section".into(),
        ));
    };
    let section = |name: &str| top.get(Y::String(name.into()));
    let Some(Y::Mapping(resources)) = section("Resources") else {
        return Err(AnalysisError::Malformed(
            "the template has no Resources mapping".into(),
        ));
    };
    let mut params = HashMap::new();
    let mut allowed = HashMap::new();
    if let Some(Y::Mapping(p)) = section("Parameters") {
        for (k, v) in p {
            if let Some(name) = k.as_str() {
                params.insert(name.to_string(), v.get("Default").cloned());
                // AllowedValues of an SSM parameter constrain the parameter's name, not the
                // value `Ref` returns; numbers are compared as written text by CloudFormation,
                // which YAML does not keep, so only lists of strings are used.
                let ssm = v
                    .get("Type")
                    .and_then(Y::as_str)
                    .is_some_and(|t| t.starts_with("AWS::SSM::"));
                if let Some(Y::Sequence(values)) = v.get("AllowedValues")
                    && !ssm
                {
                    let strings: Option<Vec<String>> = values
                        .iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect();
                    if let Some(strings) = strings {
                        allowed.insert(name.to_string(), strings);
                    }
                }
            }
        }
    }
    let ctx = Ctx {
        params,
        allowed,
        conditions: section("Conditions").cloned(),
        read_conditions: RefCell::new(HashMap::new()),
        in_condition: Cell::new(false),
        resources: resources
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        mappings: section("Mappings").cloned(),
    };

    let section_line = if is_json {
        Regex::new(r#""Resources"\s*:"#)
    } else {
        Regex::new(r"^Resources\s*:")
    }
    .ok()
    .and_then(|re| find_line(text, 0, &re))
    .unwrap_or(1);

    let lines = key_lines(text, (section_line as usize).saturating_sub(1), is_json);
    let mut out = Vec::new();
    for (k, v) in resources {
        limits.check_time()?;
        let Some(name) = k.as_str() else {
            return Err(AnalysisError::Malformed(
                "a resource's logical id is not a string".into(),
            ));
        };
        let Some(ty) = v.get("Type").and_then(Y::as_str) else {
            return Err(AnalysisError::Malformed(format!(
                "resource {name} has no Type"
            )));
        };
        let props = match v.get("Properties") {
            Some(p) => ctx.convert(p).unwrap_or(Value::Null),
            None => Value::Null,
        };
        // The regex is the fallback for a key the one-pass index misses (a JSON key written
        // with escapes, say).
        let line = lines.get(name).copied().or_else(|| {
            let esc = regex::escape(name);
            let pattern = if is_json {
                format!(r#""{esc}"\s*:"#)
            } else {
                format!(r#"^\s*["']?{esc}["']?\s*:"#)
            };
            Regex::new(&pattern)
                .ok()
                .and_then(|re| find_line(text, (section_line as usize).saturating_sub(1), &re))
        });
        out.push(Resource {
            name: name.to_string(),
            ty: ty.to_string(),
            line: line.or(Some(section_line)),
            props,
        });
    }
    Ok(Model {
        format: Format::Cfn,
        resources: out,
    })
}

fn too_deep(limits: &Limits) -> AnalysisError {
    AnalysisError::TooComplex(format!(
        "the template nests deeper than {} levels",
        limits.max_depth
    ))
}

fn yaml_error(e: &serde_yaml_ng::Error, limits: &Limits) -> AnalysisError {
    let msg = e.to_string();
    if msg.contains("recursion limit exceeded") {
        return too_deep(limits);
    }
    if msg.contains("repetition limit exceeded") {
        return AnalysisError::TooComplex(
            "the template expands aliases beyond the allowed size".into(),
        );
    }
    match e.location() {
        Some(loc) => AnalysisError::Malformed(format!(
            "YAML line {} column {}: {}",
            loc.line(),
            loc.column(),
            strip_position(&msg)
        )),
        None => AnalysisError::Malformed(format!("YAML: {msg}")),
    }
}

/// Parsers append "at line N column M"; the position is already in front.
fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Depth of a YAML value, without recursion.
fn yaml_depth(v: &Y) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Y::Sequence(s) => stack.extend(s.iter().map(|x| (x, d + 1))),
            Y::Mapping(m) => stack.extend(m.values().map(|x| (x, d + 1))),
            Y::Tagged(t) => stack.push((&t.value, d + 1)),
            _ => {}
        }
    }
    max
}

/// JSON as YAML, so one resolver serves both syntaxes (depth is checked before).
fn json_to_yaml(v: &serde_json::Value) -> Y {
    match v {
        serde_json::Value::Null => Y::Null,
        serde_json::Value::Bool(b) => Y::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Y::Number(i.into()),
            (_, Some(u), _) => Y::Number(u.into()),
            (_, _, Some(f)) => Y::Number(f.into()),
            _ => Y::Null,
        },
        serde_json::Value::String(s) => Y::String(s.clone()),
        serde_json::Value::Array(a) => Y::Sequence(a.iter().map(json_to_yaml).collect()),
        serde_json::Value::Object(o) => Y::Mapping(
            o.iter()
                .map(|(k, v)| (Y::String(k.clone()), json_to_yaml(v)))
                .collect(),
        ),
    }
}

struct Ctx {
    /// Parameter name → its Default, if any.
    params: HashMap<String, Option<Y>>,
    /// Parameter name → its AllowedValues, when the template lists them.
    allowed: HashMap<String, Vec<String>>,
    conditions: Option<Y>,
    /// Each condition as read the first time (`None` while it is being read: a condition that
    /// names itself is left to deploy time), so every `!If` on one condition gets the same
    /// formula and each is read once however often it is named.
    read_conditions: RefCell<HashMap<String, Option<Cond>>>,
    /// Set while a condition is read: an `!If` inside one (which CloudFormation refuses) is not
    /// followed into another condition.
    in_condition: Cell<bool>,
    resources: Vec<String>,
    mappings: Option<Y>,
}

/// An intrinsic function call: its name in long form (`Ref`, `Fn::If`) and its argument.
fn intrinsic(v: &Y) -> Option<(String, &Y)> {
    match v {
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let long = if name == "Ref" || name == "Condition" {
                name.to_string()
            } else {
                format!("Fn::{name}")
            };
            Some((long, &t.value))
        }
        Y::Mapping(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next()?;
            let k = k.as_str()?;
            (k == "Ref" || k.starts_with("Fn::")).then(|| (k.to_string(), arg))
        }
        _ => None,
    }
}

impl Ctx {
    /// `None` is `AWS::NoValue`: the property is removed.
    fn convert(&self, v: &Y) -> Option<Value> {
        if let Some((f, arg)) = intrinsic(v) {
            return self.function(&f, arg, v);
        }
        Some(match v {
            Y::Null => Value::Null,
            Y::Bool(b) => Value::Bool(*b),
            Y::Number(n) => Value::Num(n.as_f64().unwrap_or(0.0)),
            Y::String(s) => Value::Str(s.clone()),
            Y::Sequence(s) => Value::List(s.iter().filter_map(|x| self.convert(x)).collect()),
            Y::Mapping(m) => Value::Map(
                m.iter()
                    .filter_map(|(k, v)| Some((key_text(k), self.convert(v)?)))
                    .collect(),
            ),
            Y::Tagged(_) => Value::unknown(render(v)),
        })
    }

    fn function(&self, f: &str, arg: &Y, whole: &Y) -> Option<Value> {
        let expr = render(whole);
        match f {
            "Ref" => {
                let name = arg.as_str().unwrap_or_default();
                if name == "AWS::NoValue" {
                    return None;
                }
                if let Some(default) = self.params.get(name) {
                    let empty_default = default
                        .as_ref()
                        .and_then(Y::as_str)
                        .is_some_and(|d| d.trim().is_empty());
                    return Some(Value::Unknown {
                        expr: format!("{expr} (parameter {name}, set at deploy time)"),
                        present: !empty_default,
                        choice: None,
                    });
                }
                if self.resources.iter().any(|r| r == name) {
                    return Some(Value::Ref {
                        target: name.to_string(),
                        expr,
                    });
                }
                Some(Value::opaque(expr))
            }
            "Fn::GetAtt" => {
                let target = match arg {
                    Y::String(s) => s.split('.').next().unwrap_or_default().to_string(),
                    Y::Sequence(s) => s
                        .first()
                        .and_then(Y::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    _ => String::new(),
                };
                if self.resources.contains(&target) {
                    Some(Value::Ref { target, expr })
                } else {
                    Some(Value::opaque(expr))
                }
            }
            "Fn::Sub" => {
                let s = match arg {
                    Y::String(s) => Some(s),
                    Y::Sequence(seq) => seq.first().and_then(|x| match x {
                        Y::String(s) => Some(s),
                        _ => None,
                    }),
                    _ => None,
                };
                match s {
                    Some(s) if !s.replace("${!", "").contains("${") => {
                        Some(Value::Str(s.replace("${!", "${")))
                    }
                    _ => Some(Value::opaque(expr)),
                }
            }
            "Fn::If" => {
                let Y::Sequence(parts) = arg else {
                    return Some(Value::unknown(expr));
                };
                let (Some(name), Some(a), Some(b)) = (
                    parts.first().and_then(Y::as_str),
                    parts.get(1),
                    parts.get(2),
                ) else {
                    return Some(Value::unknown(expr));
                };
                if self.in_condition.get() {
                    return Some(Value::unknown(expr));
                }
                self.in_condition.set(true);
                let cond = self.condition(name, 0);
                self.in_condition.set(false);
                Value::choose(
                    expr,
                    name.to_string(),
                    cond,
                    self.convert(a),
                    self.convert(b),
                )
            }
            "Fn::FindInMap" => {
                let Y::Sequence(keys) = arg else {
                    return Some(Value::opaque(expr));
                };
                let mut cur = self.mappings.as_ref();
                for k in keys.iter().take(3) {
                    let Some(k) = k.as_str() else {
                        return Some(Value::opaque(expr));
                    };
                    cur = cur.and_then(|c| c.get(k));
                }
                match cur {
                    Some(found) if keys.len() == 3 => self.convert(found),
                    _ => Some(Value::opaque(expr)),
                }
            }
            "Fn::Join" => {
                let parts = match arg {
                    Y::Sequence(p) if p.len() == 2 => p,
                    _ => return Some(Value::opaque(expr)),
                };
                let sep = parts.first().and_then(Y::as_str).unwrap_or_default();
                let items = parts.get(1).and_then(|l| self.convert(l));
                if let Some(Value::List(items)) = items {
                    let strs: Option<Vec<String>> = items.iter().map(|i| i.scalar_text()).collect();
                    if let Some(strs) = strs {
                        return Some(Value::Str(strs.join(sep)));
                    }
                }
                Some(Value::opaque(expr))
            }
            "Fn::Select" => {
                if let Y::Sequence(p) = arg {
                    let idx = p.first().and_then(|i| match i {
                        Y::Number(n) => n.as_u64(),
                        Y::String(s) => s.parse().ok(),
                        _ => None,
                    });
                    if let (Some(idx), Some(Value::List(items))) =
                        (idx, p.get(1).and_then(|l| self.convert(l)))
                        && let Some(item) = usize::try_from(idx).ok().and_then(|i| items.get(i))
                        && !item.is_unresolved()
                    {
                        return Some(item.clone());
                    }
                }
                Some(Value::opaque(expr))
            }
            // Conditions and comparisons decide nothing a rule reads; everything else computes a
            // value at deploy time that surely exists.
            "Fn::Equals" | "Fn::Not" | "Fn::And" | "Fn::Or" | "Condition" => {
                Some(Value::unknown(expr))
            }
            _ => Some(Value::opaque(expr)),
        }
    }
}

/// How deep conditions may refer to conditions before the rest is left to deploy time (bounds
/// the recursion; each condition is read once, see [`Ctx::condition`]).
const MAX_CONDITION_DEPTH: usize = 32;

/// Nodes one condition's formula may have once read (see [`Ctx::condition`]).
const MAX_CONDITION_NODES: usize = 1_000;

impl Ctx {
    /// The template's condition `name` as a formula over the comparisons it is made of.
    fn condition(&self, name: &str, depth: usize) -> Cond {
        let atom = || Cond::Atom(format!("condition {name}"));
        match self.read_conditions.borrow().get(name) {
            Some(Some(read)) => return read.clone(),
            Some(None) => return atom(),
            None => {}
        }
        let found = self.conditions.as_ref().and_then(|c| c.get(name));
        let Some(expr) = found.filter(|_| depth < MAX_CONDITION_DEPTH) else {
            return atom();
        };
        self.read_conditions
            .borrow_mut()
            .insert(name.to_string(), None);
        let mut read = self.cond_expr(expr, depth + 1).simplify();
        // Conditions that each name the next several times grow as a tree; past the cap the
        // condition is one unknown of its own, which can only leave verdicts unknown.
        if read.size(MAX_CONDITION_NODES) > MAX_CONDITION_NODES {
            read = atom();
        }
        self.read_conditions
            .borrow_mut()
            .insert(name.to_string(), Some(read.clone()));
        read
    }

    fn cond_expr(&self, v: &Y, depth: usize) -> Cond {
        if depth > MAX_CONDITION_DEPTH {
            return Cond::Atom(atom_key(v));
        }
        // `{"Condition": "Name"}` is how JSON templates nest a condition in another.
        if let Y::Mapping(m) = v
            && m.len() == 1
            && let Some(Y::String(name)) = m.get(Y::String("Condition".into()))
        {
            return self.condition(name, depth + 1);
        }
        let parts = |arg: &Y| match arg {
            Y::Sequence(items) => items.iter().map(|c| self.cond_expr(c, depth + 1)).collect(),
            other => vec![self.cond_expr(other, depth + 1)],
        };
        match intrinsic(v) {
            Some((f, Y::String(name))) if f == "Condition" => self.condition(name, depth + 1),
            Some((f, arg)) if f == "Fn::Not" => match parts(arg).pop() {
                Some(c) => Cond::Not(Box::new(c)),
                None => Cond::Atom(atom_key(v)),
            },
            Some((f, arg)) if f == "Fn::And" => Cond::And(parts(arg)),
            Some((f, arg)) if f == "Fn::Or" => Cond::Or(parts(arg)),
            Some((f, Y::Sequence(sides))) if f == "Fn::Equals" && sides.len() == 2 => {
                self.equals(&sides[0], &sides[1])
            }
            _ => match self
                .convert(v)
                .as_ref()
                .and_then(Value::scalar_text)
                .as_deref()
            {
                Some("true") => Cond::Const(true),
                Some("false") => Cond::Const(false),
                _ => Cond::Atom(atom_key(v)),
            },
        }
    }

    /// `!Equals [a, b]`: decided when both sides are literal strings (or booleans), or when a
    /// parameter's AllowedValues leave one answer; otherwise one comparison, the same
    /// whichever side is written first. Numbers are left to deploy time: CloudFormation
    /// compares them as the text the template spells, which a YAML parser does not keep.
    fn equals(&self, a: &Y, b: &Y) -> Cond {
        let known = |y: &Y| match self.convert(y) {
            Some(Value::Str(s)) => Some(s),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        };
        let (ka, kb) = (known(a), known(b));
        if let (Some(x), Some(y)) = (&ka, &kb) {
            return Cond::Const(x == y);
        }
        let param = |y: &Y| match intrinsic(y) {
            Some((f, Y::String(name))) if f == "Ref" => self.allowed.get(name.as_str()),
            _ => None,
        };
        for (side, other) in [(a, &kb), (b, &ka)] {
            if let (Some(values), Some(literal)) = (param(side), other) {
                if !values.contains(literal) {
                    return Cond::Const(false);
                }
                if values.len() == 1 {
                    return Cond::Const(true);
                }
            }
        }
        Cond::equality(atom_key(a), atom_key(b))
    }
}

/// A comparison's identity: the whole node, never a shortened rendering.
fn atom_key(v: &Y) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_else(|_| render(v))
}

fn key_text(k: &Y) -> String {
    match k {
        Y::String(s) => s.clone(),
        Y::Number(n) => n.to_string(),
        Y::Bool(b) => b.to_string(),
        other => render(other),
    }
}

/// A one-line rendering of a YAML node in short-form syntax, for reasons.
pub(crate) fn render(v: &Y) -> String {
    let mut out = String::new();
    render_into(v, &mut out, 0);
    truncate(&out, 90)
}

fn render_into(v: &Y, out: &mut String, depth: usize) {
    if out.len() > 120 || depth > 8 {
        out.push('…');
        return;
    }
    if let Some((f, arg)) = intrinsic(v) {
        out.push('!');
        out.push_str(f.trim_start_matches("Fn::"));
        out.push(' ');
        render_into(arg, out, depth + 1);
        return;
    }
    match v {
        Y::Null => out.push_str("null"),
        Y::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Y::Number(n) => out.push_str(&n.to_string()),
        Y::String(s) => out.push_str(s),
        Y::Sequence(s) => {
            out.push('[');
            for (i, x) in s.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_into(x, out, depth + 1);
            }
            out.push(']');
        }
        Y::Mapping(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&key_text(k));
                out.push_str(": ");
                render_into(x, out, depth + 1);
            }
            out.push('}');
        }
        Y::Tagged(t) => {
            out.push_str(&t.tag.to_string());
            out.push(' ');
            render_into(&t.value, out, depth + 1);
        }
    }
}

fn has_aws_resources(resources: Option<&Y>) -> bool {
    match resources {
        Some(Y::Mapping(m)) => m.values().any(|r| {
            r.get("Type")
                .and_then(Y::as_str)
                .is_some_and(|t| t.starts_with("AWS::") || t.starts_with("Custom::"))
        }),
        _ => false,
    }
}

pub(crate) fn looks_like_template_json(v: &serde_json::Value) -> bool {
    let Some(o) = v.as_object() else {
        return false;
    };
    o.contains_key("AWSTemplateFormatVersion")
        || o.get("Resources")
            .and_then(|r| r.as_object())
            .is_some_and(|r| {
                r.values().any(|x| {
                    x.get("Type")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| t.starts_with("AWS::") || t.starts_with("Custom::"))
                })
            })
}

pub(crate) fn looks_like_template_yaml(text: &str) -> bool {
    let Ok(y) = serde_yaml_ng::from_str::<Y>(text) else {
        return false;
    };
    let Y::Mapping(m) = &y else {
        return false;
    };
    m.contains_key(Y::String("AWSTemplateFormatVersion".into()))
        || has_aws_resources(m.get(Y::String("Resources".into())))
}
