//! DOCX: the paragraphs of `word/document.xml`, with the heading styles that structure them.
//! Entry names are never trusted nor used as paths: the one entry read is looked up by its exact
//! name and nothing is written to disk.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::Block;
use crate::documents::analysis::{AnalysisError, Limits};

/// More entries than any Word document has (a large one has a few hundred): the central
/// directory is read before anything else, so this bounds the work of opening the archive.
const MAX_ENTRIES: u64 = 10_000;
const DOCUMENT: &str = "word/document.xml";

/// Whether these bytes are a zip archive holding `word/document.xml`.
pub(crate) fn is_docx(bytes: &[u8]) -> bool {
    if declared_entries(bytes).is_some_and(|n| n > MAX_ENTRIES) {
        return false;
    }
    zip::ZipArchive::new(Cursor::new(bytes))
        .map(|a| a.index_for_name(DOCUMENT).is_some())
        .unwrap_or(false)
}

/// The entry count of the end-of-central-directory record, read before the archive is opened.
fn declared_entries(bytes: &[u8]) -> Option<u64> {
    // The record is 22 bytes plus a comment of at most 65,535 bytes at the end of the file.
    let from = bytes.len().saturating_sub(22 + 65_535);
    let tail = &bytes[from..];
    let at = tail
        .windows(4)
        .rposition(|w| w == b"PK\x05\x06")
        .filter(|&at| at + 22 <= tail.len())?;
    let total = u16::from_le_bytes([tail[at + 10], tail[at + 11]]);
    Some(u64::from(total))
}

pub(crate) fn blocks(bytes: &[u8], limits: &Limits) -> Result<Vec<Block>, AnalysisError> {
    if let Some(n) = declared_entries(bytes)
        && n > MAX_ENTRIES
    {
        return Err(AnalysisError::TooComplex(format!(
            "the DOCX archive declares {n} entries (at most {MAX_ENTRIES} are read)"
        )));
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        AnalysisError::Malformed(format!("the DOCX is not a readable zip archive: {e}"))
    })?;
    if archive.len() as u64 > MAX_ENTRIES {
        return Err(AnalysisError::TooComplex(format!(
            "the DOCX archive has {} entries (at most {MAX_ENTRIES} are read)",
            archive.len()
        )));
    }
    limits.check_time()?;
    let xml = {
        let entry = archive.by_name(DOCUMENT).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => AnalysisError::Malformed(format!(
                "the zip archive has no {DOCUMENT}: not a Word document"
            )),
            e => AnalysisError::Malformed(format!("{DOCUMENT} cannot be read: {e}")),
        })?;
        if entry.encrypted() {
            return Err(AnalysisError::Malformed(
                "the DOCX is password-protected".into(),
            ));
        }
        if entry.size() > limits.max_expanded_bytes {
            return Err(AnalysisError::TooComplex(format!(
                "{DOCUMENT} declares {} bytes uncompressed, more than the {} allowed",
                entry.size(),
                limits.max_expanded_bytes
            )));
        }
        read_limited(entry, limits)?
    };
    let xml = String::from_utf8(xml)
        .map_err(|_| AnalysisError::Malformed(format!("{DOCUMENT} is not UTF-8 text")))?;
    paragraphs(&xml, limits)
}

/// Reads an entry through a byte budget: a declared size can lie, so the limit is enforced on
/// what the decompressor actually produces, and reading stops as soon as it is passed.
fn read_limited(entry: impl Read, limits: &Limits) -> Result<Vec<u8>, AnalysisError> {
    let max = limits.max_expanded_bytes;
    let mut reader = entry.take(max.saturating_add(1));
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| {
            AnalysisError::Malformed(format!("{DOCUMENT} is corrupt or truncated: {e}"))
        })?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() as u64 > max {
            return Err(AnalysisError::TooComplex(format!(
                "{DOCUMENT} expands to more than the {max} bytes allowed"
            )));
        }
        limits.check_time()?;
    }
    Ok(out)
}

/// A paragraph being read: its text and its style.
#[derive(Default)]
struct Para {
    text: String,
    style: Option<String>,
}

/// The paragraphs of `document.xml`: one block per paragraph, one per table row (its cells
/// joined), headings (`Heading1`…`Heading9`, `Title`) kept as the heading of what follows.
/// A DOCTYPE is refused: Word never writes one, and it is how entity expansion attacks start.
pub(crate) fn paragraphs(xml: &str, limits: &Limits) -> Result<Vec<Block>, AnalysisError> {
    let mut reader = Reader::from_str(xml);
    let mut out: Vec<Block> = Vec::new();
    let mut heading: Option<String> = None;
    let mut paras: Vec<Para> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut depth = 0usize;
    let mut in_text = false;
    let mut events = 0u64;
    let malformed = |reader: &Reader<&[u8]>, e: quick_xml::Error| {
        AnalysisError::Malformed(format!(
            "{DOCUMENT} is not well-formed XML at byte {}: {e}",
            reader.buffer_position()
        ))
    };
    loop {
        events += 1;
        if events.is_multiple_of(8192) {
            limits.check_time()?;
        }
        let event = reader.read_event().map_err(|e| malformed(&reader, e))?;
        match event {
            Event::DocType(_) => {
                return Err(AnalysisError::Malformed(format!(
                    "{DOCUMENT} declares a DOCTYPE; entity declarations are refused"
                )));
            }
            Event::Start(e) => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(AnalysisError::TooComplex(format!(
                        "{DOCUMENT} nests elements deeper than {}",
                        limits.max_depth
                    )));
                }
                match e.local_name().as_ref() {
                    "p" => paras.push(Para::default()),
                    "tr" => rows.push(Vec::new()),
                    "t" => in_text = true,
                    "pStyle" => set_style(&mut paras, &e),
                    _ => {}
                }
            }
            Event::Empty(e) => match e.local_name().as_ref() {
                "pStyle" => set_style(&mut paras, &e),
                "tab" | "br" | "cr" => {
                    if let Some(p) = paras.last_mut() {
                        p.text.push(' ');
                    }
                }
                _ => {}
            },
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                match e.local_name().as_ref() {
                    "t" => in_text = false,
                    "p" => {
                        let Some(p) = paras.pop() else { continue };
                        let text = p.text.split_whitespace().collect::<Vec<_>>().join(" ");
                        if text.is_empty() {
                            continue;
                        }
                        if p.style.as_deref().is_some_and(is_heading_style) {
                            heading = Some(text);
                        } else if let Some(row) = rows.last_mut() {
                            row.push(text);
                        } else {
                            out.push(Block {
                                text,
                                page: None,
                                heading: heading.clone(),
                            });
                        }
                    }
                    "tr" => {
                        let Some(cells) = rows.pop() else { continue };
                        if cells.is_empty() {
                            continue;
                        }
                        let mut text = cells.join("; ");
                        if !text.ends_with(['.', '!', '?']) {
                            text.push('.');
                        }
                        out.push(Block {
                            text,
                            page: None,
                            heading: heading.clone(),
                        });
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_text => {
                if let Some(p) = paras.last_mut() {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) if in_text => {
                if let Some(p) = paras.last_mut() {
                    p.text.push_str(t.as_ref());
                }
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    r.resolve_char_ref().ok().flatten()
                } else {
                    match r.xml10_content().as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        other => {
                            return Err(AnalysisError::Malformed(format!(
                                "{DOCUMENT} uses the undefined entity &{other};"
                            )));
                        }
                    }
                };
                if in_text && let (Some(p), Some(ch)) = (paras.last_mut(), ch) {
                    p.text.push(ch);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(AnalysisError::Malformed(format!(
            "{DOCUMENT} is truncated: {depth} elements are not closed"
        )));
    }
    Ok(out)
}

fn set_style(paras: &mut [Para], e: &BytesStart<'_>) {
    let Some(p) = paras.last_mut() else { return };
    let val = e
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == "val")
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        });
    p.style = val;
}

/// Word's built-in heading styles by id (`Heading1`…`Heading9`, `Title`); ids stay English
/// whatever the language of the user interface.
fn is_heading_style(style: &str) -> bool {
    let s = style.to_ascii_lowercase().replace(' ', "");
    s == "title"
        || s.strip_prefix("heading")
            .is_some_and(|n| n.len() == 1 && n.chars().all(|c| ('1'..='9').contains(&c)))
}
