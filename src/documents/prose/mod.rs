//! Prose: text of PDF, DOCX, Markdown and plain-text documents, and what it says about the
//! security of the design it describes.
//!
//! Extraction turns each format into blocks (a paragraph, a list item, a table row) with their
//! page and nearest heading; `sentences` cuts blocks into sentences; `measures` reads what the
//! sentences state against the measure table of `data/document-measures.json`. Every parser is
//! bounded by [`Limits`]: uploads are hostile. How it reads and maps: docs/DOCUMENTS.md, "Prose analysis".

mod docx;
mod measures;
mod pdf;
mod sentences;
mod text;

#[cfg(test)]
mod tests;

use super::analysis::{AnalysisError, Kind, Limits, ProseFacts, ProseFinding, Sentence};

/// Most sentences a document may yield: past it the analysis (each sentence against every
/// measure) would outgrow its time budget on anything but a book.
const MAX_SENTENCES: usize = 50_000;

/// A run of text with where it stands, before sentence splitting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub text: String,
    pub page: Option<u32>,
    pub heading: Option<String>,
}

/// Text of a document, sentence by sentence, with page (PDF) and nearest heading.
pub fn extract(kind: Kind, bytes: &[u8], limits: &Limits) -> Result<Vec<Sentence>, AnalysisError> {
    limits.check_time()?;
    let blocks = match kind {
        Kind::Pdf => pdf::blocks(bytes, limits)?,
        Kind::Docx => docx::blocks(bytes, limits)?,
        Kind::Markdown => text::markdown_blocks(utf8(bytes)?, limits)?,
        Kind::Text => text::plain_blocks(utf8(bytes)?, limits)?,
        other => {
            return Err(AnalysisError::Malformed(format!(
                "a {} document is not prose",
                other.as_str()
            )));
        }
    };
    let mut out = Vec::new();
    for (i, block) in blocks.into_iter().enumerate() {
        if i % 256 == 0 {
            limits.check_time()?;
        }
        for text in sentences::split(&block.text) {
            out.push(Sentence {
                text,
                page: block.page,
                heading: block.heading.clone(),
            });
        }
        if out.len() > MAX_SENTENCES {
            return Err(AnalysisError::TooComplex(format!(
                "the document has more than {MAX_SENTENCES} sentences"
            )));
        }
    }
    Ok(out)
}

/// Recognises prose by content: `Some(Pdf)` for `%PDF-`, `Some(Docx)` for a zip with
/// `word/document.xml`, `Some(Markdown)` for UTF-8 text with Markdown structure (headings, lists,
/// links, tables), `Some(Text)` for other UTF-8 text that is mostly printable; `None` for binary
/// or other formats.
pub fn detect(bytes: &[u8]) -> Option<Kind> {
    // A PDF may start with a few bytes of junk (a BOM, a mail header); readers look in the first
    // kilobyte, and so do we.
    let head = &bytes[..bytes.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Some(Kind::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return docx::is_docx(bytes).then_some(Kind::Docx);
    }
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)).ok()?;
    if !text::mostly_printable(text) {
        return None;
    }
    Some(if text::looks_like_markdown(text) {
        Kind::Markdown
    } else {
        Kind::Text
    })
}

/// What the text says. `frameworks`: the framework ids the user asked for (`None`: inferred from
/// the content).
pub fn analyse(
    sentences: &[Sentence],
    frameworks: Option<&[String]>,
) -> (ProseFacts, Vec<ProseFinding>) {
    measures::analyse(sentences, frameworks)
}

/// Every control id the measure table can emit.
pub fn control_ids() -> Vec<String> {
    measures::control_ids()
}

fn utf8(bytes: &[u8]) -> Result<&str, AnalysisError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        AnalysisError::Malformed(format!(
            "the text is not valid UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })
}
