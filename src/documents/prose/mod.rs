//! Prose: text of PDF, DOCX, Markdown and plain-text documents, and what it says about the
//! security of the design it describes.

use super::analysis::{AnalysisError, Kind, Limits, ProseFacts, ProseFinding, Sentence};

pub fn extract(
    _kind: Kind,
    bytes: &[u8],
    _limits: &Limits,
) -> Result<Vec<Sentence>, AnalysisError> {
    let text = String::from_utf8_lossy(bytes);
    Ok(text
        .split_terminator(['.', '\n'])
        .filter(|s| !s.trim().is_empty())
        .map(|s| Sentence {
            text: s.trim().to_string(),
            page: None,
            heading: None,
        })
        .collect())
}

pub fn detect(bytes: &[u8]) -> Option<Kind> {
    std::str::from_utf8(bytes).ok().map(|_| Kind::Text)
}

pub fn analyse(
    sentences: &[Sentence],
    _frameworks: Option<&[String]>,
) -> (ProseFacts, Vec<ProseFinding>) {
    (
        ProseFacts {
            sentences: sentences.len(),
            ..Default::default()
        },
        Vec::new(),
    )
}

pub fn control_ids() -> Vec<String> {
    Vec::new()
}
