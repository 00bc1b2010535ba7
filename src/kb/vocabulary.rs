//! The domain vocabulary (`data/vocabulary.json`): how people talk about cloud security and
//! compliance ("MFA", "encrypt at rest", "root user", "security group") mapped to the words the KB
//! uses, the AWS services and the frameworks those phrases imply; and the text normalisation
//! (words, light stemming, stop words) that both the KB text and a question go through, so a
//! question word matches the KB word it stems to.
//!
//! The vocabulary is data, compiled in and reviewed like the KB; a unit test holds every entry to
//! the rules below (well formed, no phrase in two entries, known services and frameworks).

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

static SOURCE: &str = include_str!("../../data/vocabulary.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vocabulary {
    #[serde(rename = "about")]
    _about: String,
    /// Names people give each KB framework.
    pub frameworks: Vec<FrameworkNames>,
    /// Frameworks the KB does not hold (ISO 27001, NIST 800-53): a question about them only is
    /// out of scope.
    pub other_frameworks: Vec<String>,
    /// Words that make a question about security or compliance at all (out-of-scope detection).
    pub domain_words: Vec<String>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkNames {
    pub id: String,
    pub names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// How people say it, matched as whole words.
    pub phrases: Vec<String>,
    /// The KB's words for it, added to a search.
    pub terms: Vec<String>,
    /// AWS service ids it implies.
    #[serde(default)]
    pub services: Vec<String>,
    /// Framework ids it implies (a ranking preference, not a filter).
    #[serde(default)]
    pub frameworks: Vec<String>,
}

/// A phrase found in a text: where (word positions) and what it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhraseMatch<'a> {
    pub start: usize,
    pub len: usize,
    pub target: Target<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Entry(&'a Entry),
    Framework(&'a str),
    OtherFramework(&'a str),
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for Entry {}

/// `text` followed by the KB's words for every vocabulary phrase it holds ("least privilege" →
/// "access restricted authorised"…), each word once: what `/kb/search` ranks, so a query in
/// people's words finds controls written in the frameworks' words.
pub fn expand(text: &str) -> String {
    let v = vocabulary();
    let mut out = text.to_string();
    let mut added: Vec<&str> = Vec::new();
    for m in v.find(text) {
        if let Target::Entry(entry) = m.target {
            for term in &entry.terms {
                if !added.contains(&term.as_str()) {
                    added.push(term);
                    out.push(' ');
                    out.push_str(term);
                }
            }
        }
    }
    out
}

/// The compiled-in vocabulary.
pub fn vocabulary() -> &'static Vocabulary {
    static VOCABULARY: LazyLock<Vocabulary> =
        LazyLock::new(|| serde_json::from_str(SOURCE).expect("data/vocabulary.json is valid"));
    &VOCABULARY
}

/// Phrase → what it names, keyed by the phrase's words (longest phrases tried first).
struct PhraseTable<'a> {
    by_first: HashMap<String, Vec<(Vec<String>, Target<'a>)>>,
}

fn table() -> &'static PhraseTable<'static> {
    static TABLE: LazyLock<PhraseTable<'static>> = LazyLock::new(|| {
        let v = vocabulary();
        let mut by_first: HashMap<String, Vec<(Vec<String>, Target<'static>)>> = HashMap::new();
        let mut add = |phrase: &str, target: Target<'static>| {
            let words = words(phrase);
            if let Some(first) = words.first() {
                by_first
                    .entry(first.clone())
                    .or_default()
                    .push((words.clone(), target));
            }
        };
        for f in &v.frameworks {
            for name in &f.names {
                add(name, Target::Framework(&f.id));
            }
        }
        for name in &v.other_frameworks {
            add(name, Target::OtherFramework(name));
        }
        for e in &v.entries {
            for p in &e.phrases {
                add(p, Target::Entry(e));
            }
        }
        for list in by_first.values_mut() {
            list.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        }
        PhraseTable { by_first }
    });
    &TABLE
}

impl Vocabulary {
    /// Every phrase of the vocabulary in `text`, longest match first at each position. A match
    /// inside an earlier one is dropped ("flow logs" in "vpc flow logs"); one that only overlaps
    /// it is kept ("EBS volume encryption" is both "ebs volume" and "volume encryption").
    pub fn find<'a>(&'a self, text: &str) -> Vec<PhraseMatch<'a>> {
        let t = table();
        let ws = words(text);
        let mut out = Vec::new();
        let mut end = 0;
        for i in 0..ws.len() {
            let Some(list) = t.by_first.get(&ws[i]) else {
                continue;
            };
            for (phrase, target) in list {
                if ws.len() - i >= phrase.len() && ws[i..i + phrase.len()] == phrase[..] {
                    if i + phrase.len() > end {
                        out.push(PhraseMatch {
                            start: i,
                            len: phrase.len(),
                            target: *target,
                        });
                        end = i + phrase.len();
                    }
                    break;
                }
            }
        }
        out
    }
}

/// Lower-case words of a text: runs of letters and digits, keeping a dot, slash or hyphen between
/// two of them (`8.4.2`, `s3.1`, `0.0.0.0/0`, `us-east-1`, `well-architected` stay one word). A
/// trailing dot or hyphen is punctuation.
pub fn words(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if matches!(c, '.' | '/' | '-')
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric())
        {
            cur.push(c);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Words that carry no topic in a question or a control text.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "actually",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "anyone",
    "apply",
    "are",
    "as",
    "ask",
    "at",
    "be",
    "been",
    "being",
    "both",
    "but",
    "by",
    "can",
    "could",
    "cover",
    "covers",
    "current",
    "did",
    "do",
    "does",
    "doing",
    "done",
    "e.g",
    "each",
    "enough",
    "etc",
    "every",
    "exactly",
    "expect",
    "expects",
    "for",
    "from",
    "get",
    "give",
    "go",
    "had",
    "has",
    "have",
    "help",
    "helps",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "keep",
    "keeps",
    "let",
    "like",
    "make",
    "may",
    "me",
    "mean",
    "means",
    "might",
    "must",
    "my",
    "need",
    "needs",
    "no",
    "not",
    "of",
    "on",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "out",
    "over",
    "please",
    "say",
    "says",
    "should",
    "so",
    "some",
    "still",
    "such",
    "tell",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "this",
    "those",
    "through",
    "to",
    "up",
    "us",
    "use",
    "used",
    "using",
    "very",
    "want",
    "wants",
    "was",
    "way",
    "we",
    "were",
    "what",
    "whats",
    "what's",
    "when",
    "where",
    "which",
    "while",
    "who",
    "why",
    "will",
    "with",
    "within",
    "would",
    "yes",
    "you",
    "your",
    "under",
    "per",
    "there's",
    "it's",
    "we're",
    "don't",
    "require",
    "requires",
    "required",
    "requirement",
    "requirements",
    "recommend",
    "recommends",
    "recommendation",
    "recommendations",
    "control",
    "controls",
    "criteria",
    "criterion",
    "framework",
    "standard",
    "aws",
    "amazon",
    "guidance",
    "best",
    "practice",
    "practices",
];

/// Whether a (lower-case) word carries no topic.
pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word)
}

/// A light suffix stemmer, applied to KB text and questions alike (so only consistency matters):
/// plurals, `-ing`, `-ed`, `-ion`, `-ment`, a final `-e`. `encryption`, `encrypted`, `encrypting`
/// → `encrypt`; `policies` → `policy`; `logging`, `logs` → `log`.
pub fn stem(word: &str) -> String {
    let mut w = word.to_lowercase();
    if w.len() <= 3 || !w.chars().all(|c| c.is_ascii_alphabetic()) {
        return w;
    }
    if let Some(base) = w.strip_suffix("ies")
        && base.len() >= 2
    {
        w = format!("{base}y");
    } else if w.ends_with("sses") {
        w.truncate(w.len() - 2);
    } else if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        w.truncate(w.len() - 1);
    }
    for suffix in ["ment", "ing", "ion", "ed"] {
        if w.len() > suffix.len() + 3
            && let Some(base) = w.strip_suffix(suffix)
        {
            w = base.to_string();
            // `logg` → `log`, `auditt` → `audit` (doubled final consonant).
            let b = w.as_bytes();
            if b.len() >= 2
                && b[b.len() - 1] == b[b.len() - 2]
                && !matches!(b[b.len() - 1], b'l' | b's' | b'z' | b'e')
            {
                w.truncate(w.len() - 1);
            }
            break;
        }
    }
    if w.len() > 4 && w.ends_with('e') {
        w.truncate(w.len() - 1);
    }
    w
}

/// Stemmed topic words of a text (stop words dropped), in order, repeats kept.
pub fn terms(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .flat_map(|w| {
            // `well-architected` also counts as its parts; `s3.1` stays whole (an id).
            let mut parts = vec![w.clone()];
            if w.contains('-') && !w.chars().any(|c| c.is_ascii_digit()) {
                parts.extend(w.split('-').map(str::to_string));
            }
            parts
        })
        .filter(|w| !is_stopword(w) && w.len() > 1)
        .map(|w| stem(&w))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn expansion_adds_each_named_ideas_kb_words_once_and_nothing_else() {
        let entry = &vocabulary().entries[0];
        let phrase = &entry.phrases[0];
        let text = format!("what about {phrase} and {phrase}?");
        let expanded = expand(&text);
        assert!(expanded.starts_with(&text));
        let added = &expanded[text.len()..];
        for term in &entry.terms {
            assert_eq!(
                added.matches(&format!(" {term}")).count(),
                1,
                "{term} in {expanded}"
            );
        }
        assert_eq!(expand("zzz qqq"), "zzz qqq");
    }

    #[test]
    fn vocabulary_is_well_formed() {
        let v = vocabulary();
        let services: serde_json::Value = serde_json::from_str(include_str!(
            "../../data/compliance/common/aws_services.json"
        ))
        .unwrap();
        let services: HashSet<&str> = services
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        let frameworks: HashSet<&str> = v.frameworks.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(frameworks.len(), v.frameworks.len(), "a framework twice");
        let mut seen: HashMap<Vec<String>, String> = HashMap::new();
        let mut claim = |phrase: &str, owner: String| {
            assert!(!phrase.trim().is_empty(), "{owner}: empty phrase");
            assert_eq!(
                phrase,
                phrase.to_lowercase(),
                "{owner}: {phrase:?} not lower case"
            );
            assert!(!words(phrase).is_empty(), "{owner}: {phrase:?} has no word");
            if let Some(first) = seen.insert(words(phrase), owner.clone()) {
                panic!("{phrase:?} in {first} and {owner}");
            }
        };
        for f in &v.frameworks {
            assert!(!f.names.is_empty(), "{}: no names", f.id);
            for n in &f.names {
                claim(n, format!("framework {}", f.id));
            }
        }
        for n in &v.other_frameworks {
            claim(n, "other_frameworks".into());
        }
        for (i, e) in v.entries.iter().enumerate() {
            let owner = format!("entry {i} ({:?})", e.phrases.first());
            assert!(!e.phrases.is_empty(), "{owner}: no phrases");
            assert!(
                !e.terms.is_empty() || !e.services.is_empty(),
                "{owner}: maps to nothing"
            );
            for p in &e.phrases {
                claim(p, owner.clone());
            }
            for t in &e.terms {
                assert!(
                    !terms(t).is_empty(),
                    "{owner}: term {t:?} is only stop words"
                );
            }
            for s in &e.services {
                assert!(
                    services.contains(s.as_str()),
                    "{owner}: unknown service {s}"
                );
            }
            for f in &e.frameworks {
                assert!(
                    frameworks.contains(f.as_str()),
                    "{owner}: unknown framework {f}"
                );
            }
        }
        assert!(!v.domain_words.is_empty());
    }

    #[test]
    fn words_keep_ids_and_stems_agree() {
        assert_eq!(
            words("Req. 8.4.2, S3.1 and well-architected (0.0.0.0/0)."),
            vec![
                "req",
                "8.4.2",
                "s3.1",
                "and",
                "well-architected",
                "0.0.0.0/0"
            ]
        );
        for (a, b) in [
            ("encryption", "encrypted"),
            ("encrypting", "encrypt"),
            ("logging", "logs"),
            ("policies", "policy"),
            ("rotation", "rotate"),
            ("buckets", "bucket"),
        ] {
            assert_eq!(stem(a), stem(b), "{a} / {b}");
        }
        assert_eq!(
            terms("Do we need MFA for the root user?"),
            vec!["mfa", "root", "user"]
        );
    }

    #[test]
    fn finds_longest_phrases() {
        let v = vocabulary();
        let found = v.find("Is encryption at rest required for S3 buckets under SOC 2?");
        let names: Vec<String> = found
            .iter()
            .map(|m| match m.target {
                Target::Entry(e) => e.phrases[0].clone(),
                Target::Framework(f) => f.to_string(),
                Target::OtherFramework(f) => f.to_string(),
            })
            .collect();
        assert_eq!(names, vec!["encrypt at rest", "s3", "soc2"]);
    }
}
