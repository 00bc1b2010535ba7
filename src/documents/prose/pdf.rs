//! PDF: the text of each page through `lopdf` (pure Rust), with every decompression bounded and
//! the parser's panics turned into errors.

use std::panic::{AssertUnwindSafe, catch_unwind};

use lopdf::{DecompressError, Document, Error as PdfError, LoadOptions};

use super::Block;
use super::text::{join_lines, looks_like_heading};
use crate::documents::analysis::{AnalysisError, Limits};

/// More pages than a design document has; past it the per-page work would outgrow the budget.
const MAX_PAGES: usize = 2_000;

/// Most bytes one page's content stream may inflate to before its text is read, whatever
/// `max_expanded_bytes` allows: lopdf parses the whole stream into operations in one call that no
/// deadline can interrupt, and millions of tiny operands (a stream of `/`) keep it busy for
/// seconds per few MiB. A page of text, even with vector drawings, is far below this.
const MAX_PAGE_CONTENT: usize = 4 * 1024 * 1024;

pub(crate) fn blocks(bytes: &[u8], limits: &Limits) -> Result<Vec<Block>, AnalysisError> {
    let pages = guarded(|| page_texts(bytes, limits))?;
    let mut out = Vec::new();
    for (page, text) in pages {
        page_blocks(&text, page, &mut out);
    }
    Ok(out)
}

/// Runs third-party parsing that is known to panic on malformed input; a panic becomes a
/// `Malformed` error (the panic hook still logs it, which is what we want to hear about).
fn guarded<T>(f: impl FnOnce() -> Result<T, AnalysisError>) -> Result<T, AnalysisError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(AnalysisError::Malformed(
            "the PDF is malformed (its structure could not be read)".into(),
        ))
    })
}

fn page_texts(bytes: &[u8], limits: &Limits) -> Result<Vec<(u32, String)>, AnalysisError> {
    let max = usize::try_from(limits.max_expanded_bytes).unwrap_or(usize::MAX);
    // Object and cross-reference streams are inflated while loading: bounded per stream here,
    // and page content streams per page below.
    let options = LoadOptions::with_max_decompressed_size(max);
    let doc = Document::load_mem_with_options(bytes, options).map_err(pdf_error)?;
    limits.check_time()?;
    let pages = doc.get_pages();
    if pages.len() > MAX_PAGES {
        return Err(AnalysisError::TooComplex(format!(
            "the PDF has {} pages (at most {MAX_PAGES} are read)",
            pages.len()
        )));
    }
    if pages.is_empty() {
        return Err(AnalysisError::Malformed("the PDF has no pages".into()));
    }
    let mut out = Vec::with_capacity(pages.len());
    let mut total = 0usize;
    let page_max = max.min(MAX_PAGE_CONTENT);
    for &number in pages.keys() {
        limits.check_time()?;
        let text = match doc.extract_text_with_limit(&[number], page_max) {
            Ok(text) => text,
            Err(e @ PdfError::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
                return Err(pdf_error(e));
            }
            // A page whose fonts or operators cannot be read is skipped rather than failing
            // the document: the other pages still say what they say.
            Err(_) => String::new(),
        };
        total = total.saturating_add(text.len());
        if total > max {
            return Err(AnalysisError::TooComplex(format!(
                "the PDF's text is longer than the {max} bytes allowed"
            )));
        }
        out.push((number, text));
    }
    Ok(out)
}

fn pdf_error(e: PdfError) -> AnalysisError {
    match e {
        PdfError::Decompress(DecompressError::MemoryLimitExceeded { limit }) => {
            AnalysisError::TooComplex(format!(
                "a PDF stream expands to more than the {limit} bytes allowed"
            ))
        }
        PdfError::Decryption(_) => {
            AnalysisError::Malformed("the PDF is encrypted with a password".into())
        }
        e => AnalysisError::Malformed(format!("the PDF cannot be read: {e}")),
    }
}

/// One page's text into blocks: lines join into paragraphs; a blank line or a heading-like line
/// (short, no sentence ending) separates them, so a title is not glued to the sentence after it.
fn page_blocks(text: &str, page: u32, out: &mut Vec<Block>) {
    let mut para: Vec<String> = Vec::new();
    let flush = |para: &mut Vec<String>, out: &mut Vec<Block>| {
        if !para.is_empty() {
            let text = join_lines(para);
            para.clear();
            if !text.trim().is_empty() {
                out.push(Block {
                    text,
                    page: Some(page),
                    heading: None,
                });
            }
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            flush(&mut para, out);
            continue;
        }
        // A wrapped line of a paragraph can look like a title too; only one that follows a
        // finished sentence (or nothing) is taken as one.
        let after_sentence = para
            .last()
            .is_none_or(|l| l.ends_with(['.', '!', '?', ':']));
        if after_sentence && looks_like_heading(line) && line.split_whitespace().count() <= 8 {
            flush(&mut para, out);
            para.push(line.to_string());
            flush(&mut para, out);
            continue;
        }
        para.push(line.to_string());
    }
    flush(&mut para, out);
}
