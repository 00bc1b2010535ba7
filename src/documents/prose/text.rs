//! Markdown and plain text into blocks. A hand-written reader rather than a CommonMark parser:
//! the analysis needs the words, the block boundaries and the headings, not a faithful render,
//! and a line-by-line reader is trivially linear in time and memory whatever the input.

use super::Block;
use crate::documents::analysis::{AnalysisError, Limits};

/// Longest line accepted for a plain-text heading guess: real headings are short.
const MAX_HEADING_CHARS: usize = 90;

/// Collects blocks while tracking the heading above them.
struct Builder {
    blocks: Vec<Block>,
    heading: Option<String>,
    para: Vec<String>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            blocks: Vec::new(),
            heading: None,
            para: Vec::new(),
        }
    }

    fn flush(&mut self) {
        if self.para.is_empty() {
            return;
        }
        let text = join_lines(&self.para);
        self.para.clear();
        self.push(text);
    }

    fn push(&mut self, text: String) {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() {
            self.blocks.push(Block {
                text,
                page: None,
                heading: self.heading.clone(),
            });
        }
    }

    fn set_heading(&mut self, text: &str) {
        self.flush();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        self.heading = (!text.is_empty()).then_some(text);
    }
}

/// Lines of one paragraph joined, undoing end-of-line hyphenation (`encryp-` / `tion`).
pub(crate) fn join_lines(lines: &[String]) -> String {
    let mut out = String::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if out.ends_with('-')
            && out[..out.len() - 1]
                .chars()
                .last()
                .is_some_and(char::is_alphabetic)
            && line.chars().next().is_some_and(char::is_lowercase)
        {
            out.pop();
        } else if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// Markdown: ATX and setext headings, paragraphs, list items, table rows and block quotes
/// become blocks with the nearest heading; fenced and indented code is skipped (commands and
/// configuration excerpts are not statements of the design, and templates are analysed by their
/// own analyser); inline markup is stripped, links keep their text.
pub(crate) fn markdown_blocks(text: &str, limits: &Limits) -> Result<Vec<Block>, AnalysisError> {
    let mut b = Builder::new();
    let mut fence: Option<(char, usize)> = None;
    let mut in_comment = false;
    let mut front_matter = false;
    // Whether the last non-blank line belonged to a list, whose indented continuations are text.
    let mut in_list = false;
    for (n, raw) in text.lines().enumerate() {
        if n % 4096 == 0 {
            limits.check_time()?;
        }
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if n == 0 && trimmed == "---" {
            front_matter = true;
            continue;
        }
        if front_matter {
            if trimmed == "---" || trimmed == "..." {
                front_matter = false;
            }
            continue;
        }
        if let Some((ch, len)) = fence {
            let run = trimmed.chars().take_while(|&c| c == ch).count();
            if run >= len && trimmed.chars().skip(run).all(char::is_whitespace) {
                fence = None;
            }
            continue;
        }
        if in_comment {
            if trimmed.contains("-->") {
                in_comment = false;
            }
            continue;
        }
        if trimmed.starts_with("<!--") {
            if !trimmed.contains("-->") {
                in_comment = true;
            }
            b.flush();
            continue;
        }
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        if let Some(ch) = fence_char {
            let run = trimmed.chars().take_while(|&c| c == ch).count();
            if run >= 3 {
                b.flush();
                fence = Some((ch, run));
                continue;
            }
        }
        if trimmed.is_empty() {
            b.flush();
            continue;
        }
        let indent = line.len() - trimmed.len();
        // Indented code: four spaces after a blank line, unless it continues a list item.
        if indent >= 4 && b.para.is_empty() && !in_list {
            continue;
        }
        if let Some(h) = atx_heading(trimmed) {
            b.set_heading(&inline(h));
            continue;
        }
        if is_setext_underline(trimmed) && !b.para.is_empty() {
            let heading = inline(&join_lines(&b.para));
            b.para.clear();
            b.set_heading(&heading);
            continue;
        }
        if is_thematic_break(trimmed) {
            b.flush();
            continue;
        }
        if trimmed.starts_with('|') || (b.para.is_empty() && is_table_row(trimmed)) {
            b.flush();
            if !is_table_delimiter(trimmed) {
                let cells: Vec<String> = trimmed
                    .trim_matches('|')
                    .split('|')
                    .map(|c| inline(c.trim()))
                    .filter(|c| !c.is_empty())
                    .collect();
                // A row is one statement; closing it keeps the splitter from gluing rows.
                let mut row = cells.join("; ");
                if !row.is_empty() && !row.ends_with(['.', '!', '?']) {
                    row.push('.');
                }
                b.push(row);
            }
            continue;
        }
        let mut content = trimmed;
        while let Some(rest) = content.strip_prefix('>') {
            content = rest.trim_start();
        }
        if content.is_empty() {
            b.flush();
            continue;
        }
        if let Some(item) = list_item(content) {
            b.flush();
            b.para.push(inline(item));
            in_list = true;
            continue;
        }
        if indent == 0 {
            in_list = false;
        }
        if is_link_definition(content) {
            continue;
        }
        b.para.push(inline(content));
    }
    b.flush();
    Ok(b.blocks)
}

/// Plain text: paragraphs separated by blank lines; a short line standing alone, starting with
/// a capital or a number and not ending like a sentence, is taken as a heading.
pub(crate) fn plain_blocks(text: &str, limits: &Limits) -> Result<Vec<Block>, AnalysisError> {
    let mut b = Builder::new();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (n, line) in lines.iter().enumerate() {
        if n % 4096 == 0 {
            limits.check_time()?;
        }
        if line.is_empty() {
            b.flush();
            continue;
        }
        let alone = b.para.is_empty() && lines.get(n + 1).is_none_or(|next| next.is_empty());
        if alone && looks_like_heading(line) {
            b.set_heading(line);
            continue;
        }
        if let Some(item) = list_item(line) {
            b.flush();
            b.para.push(item.to_string());
            continue;
        }
        b.para.push(line.to_string());
    }
    b.flush();
    Ok(b.blocks)
}

/// A short line with no sentence ending that starts with a capital letter or a section number.
pub(crate) fn looks_like_heading(line: &str) -> bool {
    let line = line.trim();
    line.chars().count() <= MAX_HEADING_CHARS
        && !line.ends_with(['.', ',', ';', ':', '!', '?'])
        && line
            .chars()
            .next()
            .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit())
        && line.split_whitespace().count() <= 12
        && line.chars().any(char::is_alphabetic)
}

fn atx_heading(line: &str) -> Option<&str> {
    let hashes = line.chars().take_while(|&c| c == '#').count();
    if hashes == 0 || hashes > 6 {
        return None;
    }
    let rest = &line[hashes..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim();
    let rest = rest.trim_end_matches('#').trim_end();
    Some(rest)
}

fn is_setext_underline(line: &str) -> bool {
    line.len() >= 2 && (line.chars().all(|c| c == '=') || line.chars().all(|c| c == '-'))
}

fn is_thematic_break(line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 3
        && ['-', '*', '_']
            .iter()
            .any(|&m| compact.chars().all(|c| c == m))
}

fn is_table_row(line: &str) -> bool {
    line.matches('|').count() >= 2
}

fn is_table_delimiter(line: &str) -> bool {
    line.contains('-')
        && line
            .chars()
            .all(|c| matches!(c, '|' | '-' | ':' | ' ' | '\t'))
}

/// The text of a list item (`- x`, `* x`, `+ x`, `1. x`, `1) x`, task boxes dropped).
fn list_item(line: &str) -> Option<&str> {
    let rest = if let Some(r) = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))
        .or_else(|| line.strip_prefix("+ "))
    {
        r
    } else {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let r = &line[digits..];
        r.strip_prefix(". ").or_else(|| r.strip_prefix(") "))?
    };
    let rest = rest.trim_start();
    let rest = ["[ ] ", "[x] ", "[X] "]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest);
    Some(rest)
}

fn is_link_definition(line: &str) -> bool {
    line.starts_with('[')
        && line
            .find("]:")
            .is_some_and(|i| !line[1..i].contains('[') && i > 1)
}

/// Inline Markdown to plain text: links and images keep their text, emphasis and code marks go,
/// HTML tags go, backslash escapes are resolved.
pub(crate) fn inline(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if chars.get(i + 1).is_some_and(|n| n.is_ascii_punctuation()) => {
                out.push(chars[i + 1]);
                i += 2;
            }
            '!' if chars.get(i + 1) == Some(&'[') => {
                i += 1;
            }
            '[' => {
                // `[text](url)` or `[text][ref]`: keep the text, drop the target.
                if let Some(close) = find_close(&chars, i) {
                    let text: String = chars[i + 1..close].iter().collect();
                    out.push_str(&inline(&text));
                    let mut j = close + 1;
                    if chars.get(j) == Some(&'(') {
                        if let Some(end) = chars[j..].iter().position(|&c| c == ')') {
                            j += end + 1;
                        }
                    } else if chars.get(j) == Some(&'[')
                        && let Some(end) = chars[j..].iter().position(|&c| c == ']')
                    {
                        j += end + 1;
                    }
                    i = j;
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            '<' => {
                // Autolinks keep their address; HTML tags disappear.
                if let Some(end) = chars[i..].iter().position(|&c| c == '>') {
                    let inner: String = chars[i + 1..i + end].iter().collect();
                    if inner.contains("://") || inner.contains('@') && !inner.contains(' ') {
                        out.push_str(&inner);
                        i += end + 1;
                        continue;
                    }
                    if inner
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!')
                    {
                        i += end + 1;
                        continue;
                    }
                }
                out.push(c);
                i += 1;
            }
            '`' => {
                i += 1;
            }
            '*' | '~' => {
                i += 1;
            }
            '_' => {
                // Emphasis only at a word edge: `snake_case` keeps its underscore.
                let prev = i.checked_sub(1).and_then(|p| chars.get(p));
                let next = chars.get(i + 1);
                let inside_word = prev.is_some_and(|p| p.is_alphanumeric())
                    && next.is_some_and(|n| n.is_alphanumeric());
                if inside_word {
                    out.push(c);
                }
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in chars.iter().enumerate().skip(open) {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Text rather than binary: no NUL, and at least 95 % of the characters printable or white
/// space.
pub(crate) fn mostly_printable(text: &str) -> bool {
    if text.trim().is_empty() || text.contains('\0') {
        return false;
    }
    let (mut total, mut printable) = (0usize, 0usize);
    for c in text.chars().take(65_536) {
        total += 1;
        if !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c') {
            printable += 1;
        }
    }
    printable * 100 >= total * 95
}

/// Markdown structure: an ATX heading, a setext underline, list items, links or a table, in
/// the first lines.
pub(crate) fn looks_like_markdown(text: &str) -> bool {
    let mut score = 0;
    let mut prev_nonblank = false;
    for line in text.lines().take(400) {
        let t = line.trim();
        let heading = atx_heading(t).is_some_and(|h| !h.is_empty())
            || prev_nonblank && t.len() >= 3 && is_setext_underline(t);
        let item = t.starts_with('|') && t.ends_with('|') && t.len() > 2 || list_item(t).is_some();
        if heading {
            score += 2;
        } else if item {
            score += 1;
        }
        if t.contains("](") || t.starts_with("```") {
            score += 1;
        }
        prev_nonblank = !t.is_empty();
        if score >= 2 {
            return true;
        }
    }
    false
}
