//! One value model for CloudFormation, Terraform HCL and plan JSON, so each rule is written once.
//! What a template leaves to deploy time stays visible as `Ref` or `Unknown` instead of being
//! guessed.

/// A property value after the intrinsic functions a template can resolve alone are resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    List(Vec<Value>),
    /// Keys in document order (Terraform blocks become a key holding a list of maps).
    Map(Vec<(String, Value)>),
    /// A reference to another resource of the document or one of its attributes: present, but
    /// its content is only known at deploy time. `target` is the logical id or Terraform address.
    Ref {
        target: String,
        expr: String,
    },
    /// Decided at deploy time (parameter, variable, condition, function). `present` says whether
    /// a value surely exists (a `!Sub` string) or may be missing altogether (an `!If` with
    /// `AWS::NoValue`, a variable that may be null).
    Unknown {
        expr: String,
        present: bool,
        /// When the value is one of two the document spells out (`!If`, `cond ? a : b`), the
        /// two and what decides between them: rules can then be run once per case.
        choice: Option<Box<Choice>>,
    },
}

/// A value chosen by a condition the document names but cannot decide alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// How a reader names the condition: the CloudFormation condition's name, the Terraform
    /// predicate as written.
    pub label: String,
    pub cond: Cond,
    /// `None`: no value at all in that case (`AWS::NoValue`).
    pub then: Option<Value>,
    pub otherwise: Option<Value>,
}

/// A condition as a formula over the comparisons it is made of, so that two conditions built
/// on the same comparison (`IsProd`, `IsNotProd`) are never assumed to differ independently.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Const(bool),
    /// A comparison left to deploy time, keyed by its full text.
    Atom(String),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

impl Cond {
    /// The atoms of the formula, each once, in first-seen order.
    pub fn atoms<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Cond::Const(_) => {}
            Cond::Atom(a) => {
                if !out.contains(&a.as_str()) {
                    out.push(a);
                }
            }
            Cond::Not(c) => c.atoms(out),
            Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|c| c.atoms(out)),
        }
    }

    /// The formula's value when each atom in `world` has the value given; `None` when it
    /// depends on an atom the world does not fix.
    pub fn eval(&self, world: &[(&str, bool)]) -> Option<bool> {
        match self {
            Cond::Const(b) => Some(*b),
            Cond::Atom(a) => world.iter().find(|(k, _)| k == a).map(|(_, v)| *v),
            Cond::Not(c) => c.eval(world).map(|b| !b),
            Cond::And(cs) => Cond::fold(cs, world, false),
            Cond::Or(cs) => Cond::fold(cs, world, true),
        }
    }

    /// `And` (`settles` false) or `Or` (`settles` true): one operand of value `settles` decides
    /// the whole; otherwise every operand must be known.
    fn fold(cs: &[Cond], world: &[(&str, bool)], settles: bool) -> Option<bool> {
        let mut out = Some(!settles);
        for c in cs {
            match c.eval(world) {
                Some(b) if b == settles => return Some(settles),
                None => out = None,
                Some(_) => {}
            }
        }
        out
    }

    /// Nodes in the formula, counted up to `cap` (a formula is a tree: a condition that names
    /// another several times holds as many copies of it).
    pub fn size(&self, cap: usize) -> usize {
        let mut count = 0;
        let mut stack = vec![self];
        while let Some(c) = stack.pop() {
            count += 1;
            if count > cap {
                break;
            }
            match c {
                Cond::Not(inner) => stack.push(inner),
                Cond::And(cs) | Cond::Or(cs) => stack.extend(cs.iter()),
                Cond::Const(_) | Cond::Atom(_) => {}
            }
        }
        count
    }

    /// Folds constants, so a condition the document decides alone reads as one.
    pub fn simplify(self) -> Cond {
        match self {
            Cond::Not(c) => match c.simplify() {
                Cond::Const(b) => Cond::Const(!b),
                other => Cond::Not(Box::new(other)),
            },
            Cond::And(cs) => Cond::simplify_all(cs, false, Cond::And),
            Cond::Or(cs) => Cond::simplify_all(cs, true, Cond::Or),
            other => other,
        }
    }

    /// The operands of `And` (`settles` false) or `Or` (`settles` true) simplified: one that
    /// is the constant `settles` decides the whole, the other constant drops out.
    fn simplify_all(cs: Vec<Cond>, settles: bool, rebuild: fn(Vec<Cond>) -> Cond) -> Cond {
        let cs: Vec<Cond> = cs.into_iter().map(Cond::simplify).collect();
        if cs.contains(&Cond::Const(settles)) {
            return Cond::Const(settles);
        }
        let rest: Vec<Cond> = cs
            .into_iter()
            .filter(|c| *c != Cond::Const(!settles))
            .collect();
        if rest.is_empty() {
            Cond::Const(!settles)
        } else {
            rebuild(rest)
        }
    }

    /// `a == b` left to deploy time: one comparison whichever side is written first. The keys
    /// are the sides in full (two long comparisons that start alike are different questions).
    pub fn equality(a: String, b: String) -> Cond {
        let (a, b) = if b < a { (b, a) } else { (a, b) };
        Cond::Atom(format!("{a} == {b}"))
    }
}

/// What a rule can read from a value: known, undecidable (with the expression), or missing.
#[derive(Debug, Clone, PartialEq)]
pub enum Read<T> {
    Known(T),
    Unknown(String),
    Absent,
}

impl Value {
    pub fn unknown(expr: impl Into<String>) -> Value {
        Value::Unknown {
            expr: expr.into(),
            present: false,
            choice: None,
        }
    }

    pub fn opaque(expr: impl Into<String>) -> Value {
        Value::Unknown {
            expr: expr.into(),
            present: true,
            choice: None,
        }
    }

    /// One of two values, by a condition the document cannot decide: unresolved for every
    /// rule, with both values kept for [`Value::in_world`]. Equal values need no condition.
    pub fn choose(
        expr: String,
        label: String,
        cond: Cond,
        then: Option<Value>,
        otherwise: Option<Value>,
    ) -> Option<Value> {
        match cond.simplify() {
            Cond::Const(true) => then,
            Cond::Const(false) => otherwise,
            _ if then == otherwise => then,
            cond => {
                // Surely set only when both values are (an empty string or an empty-default
                // parameter is not), so a presence check is tried case by case.
                let set = |v: &Option<Value>| {
                    v.as_ref()
                        .is_some_and(|v| v.presence() == Read::Known(true))
                };
                let present = set(&then) && set(&otherwise);
                Some(Value::Unknown {
                    expr,
                    present,
                    choice: Some(Box::new(Choice {
                        label,
                        cond,
                        then,
                        otherwise,
                    })),
                })
            }
        }
    }

    /// Every choice in the value (nested ones included), in document order.
    pub fn choices<'a>(&'a self, out: &mut Vec<&'a Choice>) {
        match self {
            Value::List(items) => items.iter().for_each(|v| v.choices(out)),
            Value::Map(entries) => entries.iter().for_each(|(_, v)| v.choices(out)),
            Value::Unknown {
                choice: Some(c), ..
            } => {
                out.push(c);
                for v in [&c.then, &c.otherwise].into_iter().flatten() {
                    v.choices(out);
                }
            }
            _ => {}
        }
    }

    /// The value in one case of its conditions: each choice whose condition `world` decides
    /// replaced by the value it picks (`None`: the value is removed). Choices the world does
    /// not decide stay unresolved.
    pub fn in_world(&self, world: &[(&str, bool)]) -> Option<Value> {
        match self {
            Value::List(items) => Some(Value::List(
                items.iter().filter_map(|v| v.in_world(world)).collect(),
            )),
            Value::Map(entries) => Some(Value::Map(
                entries
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.in_world(world)?)))
                    .collect(),
            )),
            Value::Unknown {
                choice: Some(c), ..
            } => match c.cond.eval(world) {
                Some(true) => c.then.as_ref().and_then(|v| v.in_world(world)),
                Some(false) => c.otherwise.as_ref().and_then(|v| v.in_world(world)),
                None => Some(self.clone()),
            },
            other => Some(other.clone()),
        }
    }

    /// The entry `key` of a map; a list of exactly one map (a Terraform block written once) is
    /// looked through, which is how both formats nest settings.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Value::List(items) if items.len() == 1 => items.first().and_then(|v| v.get(key)),
            _ => None,
        }
    }

    /// A dotted path (`PublicAccessBlockConfiguration.BlockPublicAcls`). Stops at an
    /// unresolved value, which is returned so the caller can report it.
    pub fn path(&self, path: &str) -> Option<&Value> {
        let mut cur = self;
        for seg in path.split('.') {
            if cur.is_unresolved() {
                return Some(cur);
            }
            cur = cur.get(seg)?;
        }
        Some(cur)
    }

    pub fn is_unresolved(&self) -> bool {
        matches!(self, Value::Ref { .. } | Value::Unknown { .. })
    }

    /// The expression of an unresolved value.
    pub fn expr(&self) -> Option<&str> {
        match self {
            Value::Ref { expr, .. } | Value::Unknown { expr, .. } => Some(expr),
            _ => None,
        }
    }

    /// The elements of a list; a single non-list value counts as a list of one (Terraform and
    /// CloudFormation both accept a scalar where a list of one is meant in places).
    pub fn items(&self) -> Vec<&Value> {
        match self {
            Value::List(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            other => vec![other],
        }
    }

    pub fn entries(&self) -> &[(String, Value)] {
        match self {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A string, a number or a boolean as text (templates often quote numbers and booleans).
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Num(n) => Some(fmt_num(*n)),
            _ => None,
        }
    }

    pub fn bool(&self) -> Read<bool> {
        match self {
            Value::Bool(b) => Read::Known(*b),
            Value::Str(s) if s.eq_ignore_ascii_case("true") => Read::Known(true),
            Value::Str(s) if s.eq_ignore_ascii_case("false") => Read::Known(false),
            Value::Null => Read::Absent,
            Value::Ref { expr, .. } | Value::Unknown { expr, .. } => Read::Unknown(expr.clone()),
            other => Read::Unknown(other.short()),
        }
    }

    pub fn num(&self) -> Read<f64> {
        match self {
            Value::Num(n) => Read::Known(*n),
            Value::Str(s) => match s.trim().parse::<f64>() {
                Ok(n) => Read::Known(n),
                Err(_) => Read::Unknown(s.clone()),
            },
            Value::Null => Read::Absent,
            Value::Ref { expr, .. } | Value::Unknown { expr, .. } => Read::Unknown(expr.clone()),
            other => Read::Unknown(other.short()),
        }
    }

    pub fn text(&self) -> Read<String> {
        match self {
            Value::Null => Read::Absent,
            Value::Ref { expr, .. } | Value::Unknown { expr, .. } => Read::Unknown(expr.clone()),
            other => match other.scalar_text() {
                Some(s) => Read::Known(s),
                None => Read::Unknown(other.short()),
            },
        }
    }

    /// Whether a value is set at all: `Ref` and present `Unknown` are set; an empty string or
    /// list is not.
    pub fn presence(&self) -> Read<bool> {
        match self {
            Value::Null => Read::Known(false),
            Value::Str(s) => Read::Known(!s.trim().is_empty()),
            Value::List(l) => Read::Known(!l.is_empty()),
            Value::Map(m) => Read::Known(!m.is_empty()),
            Value::Unknown { expr, present, .. } => {
                if *present {
                    Read::Known(true)
                } else {
                    Read::Unknown(expr.clone())
                }
            }
            _ => Read::Known(true),
        }
    }

    /// A short rendering for reasons (never the whole of a large value).
    pub fn short(&self) -> String {
        let mut s = String::new();
        self.render(&mut s, 0);
        truncate(&s, 80)
    }

    fn render(&self, out: &mut String, depth: usize) {
        if out.len() > 100 || depth > 6 {
            out.push('…');
            return;
        }
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Num(n) => out.push_str(&fmt_num(*n)),
            Value::Str(s) => out.push_str(&format!("{s:?}")),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.render(out, depth + 1);
                }
                out.push(']');
            }
            Value::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push_str(": ");
                    v.render(out, depth + 1);
                }
                out.push('}');
            }
            Value::Ref { expr, .. } | Value::Unknown { expr, .. } => out.push_str(expr),
        }
    }
}

pub fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// JSON (a policy document written inline or produced by `jsonencode`) as a `Value`.
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Num(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(a) => Value::List(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

/// Deepest nesting of a JSON value, counted without recursion so a hostile document cannot
/// exhaust the stack here.
pub fn json_depth(v: &serde_json::Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            serde_json::Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}
