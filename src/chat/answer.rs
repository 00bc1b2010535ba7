//! Placeholder until retrieval and the built-in answerer land (same interface).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::understand::{Intent, Understanding};
use crate::kb::KbState;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Citation {
    pub id: String,
    pub framework: String,
    pub version: String,
    pub control_id: String,
    pub title: String,
    pub url: String,
    pub reason: String,
}

pub struct Grounding {
    citations: Vec<Citation>,
}

impl Grounding {
    pub fn context(&self) -> String {
        self.citations
            .iter()
            .map(|c| format!("[{}] {}", c.id, c.title))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn citation(&self, id: &str) -> Option<Citation> {
        self.citations.iter().find(|c| c.id == id).cloned()
    }
}

pub async fn retrieve(
    _kb: &KbState,
    question: &str,
    u: &Understanding,
) -> anyhow::Result<Grounding> {
    let citations = if u.intent == Intent::OutOfScope || !question.contains("HIPAA") {
        vec![]
    } else {
        vec![Citation {
            id: "hipaa-sr:164.312(a)(2)(iv)".into(),
            framework: "hipaa-sr".into(),
            version: "2013".into(),
            control_id: "164.312(a)(2)(iv)".into(),
            title: "Encryption and decryption".into(),
            url: "https://www.ecfr.gov/".into(),
            reason: "placeholder".into(),
        }]
    };
    Ok(Grounding { citations })
}

pub struct Answer {
    pub text: String,
    pub citations: Vec<Citation>,
    pub covered: bool,
}

pub fn compose(_question: &str, u: &Understanding, g: &Grounding) -> Answer {
    if u.intent == Intent::OutOfScope {
        return Answer {
            text: "I answer questions about AWS security and compliance.".into(),
            citations: vec![],
            covered: false,
        };
    }
    let mut text = String::from("Placeholder answer.\n\n");
    for c in &g.citations {
        text.push_str(&format!("- {} {}\n", c.id, c.title));
    }
    Answer {
        text,
        citations: g.citations.clone(),
        covered: !g.citations.is_empty(),
    }
}

pub async fn verify(_kb: &KbState, _text: &str) -> anyhow::Result<(Vec<Citation>, Vec<String>)> {
    Ok((vec![], vec![]))
}
