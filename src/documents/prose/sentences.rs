//! Sentence splitting for technical and regulatory prose, where a full stop is often not the
//! end of a sentence: "e.g.", "i.e.", "Art. 32", "164.312(a)(2)(iv)", "TLS 1.2", "U.S.".

/// Longest sentence kept whole; a run of text without any full stop (a long table cell, a
/// PDF page without punctuation) is cut at a word boundary so a quote stays readable.
const MAX_SENTENCE_CHARS: usize = 600;

/// Abbreviations that end with a full stop inside a sentence (lower case, without the stop).
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "cf", "vs", "viz", "al", "art", "arts", "sec", "secs", "no", "nos", "fig",
    "figs", "ch", "chap", "para", "paras", "p", "pp", "vol", "req", "reqs", "approx", "incl",
    "excl", "min", "max", "mr", "mrs", "ms", "dr", "prof", "inc", "ltd", "co", "corp", "dept",
    "est", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "u.s", "u.k", "e.u", "a.m", "p.m", "ref", "resp", "ca", "st",
];

/// The sentences of one block, white space normalised.
pub(crate) fn split(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '.' | '!' | '?' | '…') {
            // Swallow runs of terminal marks and the closing quotes or brackets after them.
            let mut end = i + 1;
            while end < chars.len() && matches!(chars[end], '.' | '!' | '?' | '…') {
                end += 1;
            }
            while end < chars.len() && matches!(chars[end], '"' | '\'' | ')' | ']' | '”' | '’')
            {
                end += 1;
            }
            if is_boundary(&chars, i, end) {
                push(&mut out, &chars[start..end]);
                start = end;
            }
            i = end;
            continue;
        }
        i += 1;
    }
    push(&mut out, &chars[start..]);
    out
}

fn push(out: &mut Vec<String>, chars: &[char]) {
    let s: String = chars.iter().collect();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.is_empty() || !s.chars().any(char::is_alphanumeric) {
        return;
    }
    if s.chars().count() <= MAX_SENTENCE_CHARS {
        out.push(s);
        return;
    }
    let mut cur = String::new();
    for word in s.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > MAX_SENTENCE_CHARS {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
}

/// Whether the terminal mark at `mark` (its run ending before `end`) closes a sentence.
fn is_boundary(chars: &[char], mark: usize, end: usize) -> bool {
    // End of the block.
    let mut next = end;
    while next < chars.len() && chars[next].is_whitespace() {
        next += 1;
    }
    if next == chars.len() {
        return true;
    }
    // "1.2", "164.312", "e.g.x": no space after the mark, so inside a token.
    if next == end {
        return false;
    }
    // The next sentence starts with a capital, a digit, a quote or a bracket; a lower-case word
    // after the stop means the stop was an abbreviation ("approx. ten", "etc. and").
    let starts_sentence = chars[next].is_uppercase()
        || chars[next].is_ascii_digit()
        || matches!(chars[next], '"' | '\'' | '(' | '[' | '“' | '‘' | '*' | '-');
    if !starts_sentence {
        return false;
    }
    if chars[mark] != '.' || end - mark > 1 && chars[mark + 1] == '.' {
        return true;
    }
    // The word the full stop ends.
    let mut w = mark;
    while w > 0 && !chars[w - 1].is_whitespace() && !matches!(chars[w - 1], '(' | '"' | '“') {
        w -= 1;
    }
    let word: String = chars[w..mark].iter().collect::<String>().to_lowercase();
    if word.is_empty() {
        return true;
    }
    if ABBREVIATIONS.contains(&word.as_str()) {
        // "Art. 32", "No. 5", "Req. 8.4.2": the abbreviation announces a number.
        return !(chars[next].is_ascii_digit() || word != "etc" && word != "al");
    }
    // An initial or an acronym with stops: "J. Smith", "U.S. Government", "e.g. Aurora".
    let letters: Vec<char> = word.chars().filter(|c| *c != '.').collect();
    if word.contains('.') && letters.iter().all(|c| c.is_alphabetic()) && letters.len() <= 4 {
        return false;
    }
    if letters.len() == 1 && letters[0].is_alphabetic() && letters[0].is_uppercase() {
        return false;
    }
    if word.chars().count() == 1 && word.chars().all(|c| c.is_alphabetic()) {
        // A single capital in the original ("A.") is an initial; a lone lower-case letter too.
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn does_not_break_on_abbreviations_ids_and_versions() {
        let text = "Data is encrypted, e.g. with KMS, i.e. at rest. The rule in Art. 32 applies. \
                    We meet 164.312(a)(2)(iv). Clients use TLS 1.2 or later. \
                    U.S. customers are served from us-east-1. Version 2.4.1 is deployed. Done!";
        assert_eq!(
            split(text),
            vec![
                "Data is encrypted, e.g. with KMS, i.e. at rest.",
                "The rule in Art. 32 applies.",
                "We meet 164.312(a)(2)(iv).",
                "Clients use TLS 1.2 or later.",
                "U.S. customers are served from us-east-1.",
                "Version 2.4.1 is deployed.",
                "Done!",
            ]
        );
    }

    #[test]
    fn splits_on_question_marks_quotes_and_brackets() {
        assert_eq!(
            split("Is MFA on? \"Yes.\" (It is.) Next line"),
            vec!["Is MFA on?", "\"Yes.\"", "(It is.)", "Next line"]
        );
    }

    #[test]
    fn etc_before_a_capital_ends_a_sentence_but_not_before_lower_case() {
        assert_eq!(
            split("We log S3, RDS, etc. and alert. Logs go to S3 etc. The end."),
            vec![
                "We log S3, RDS, etc. and alert.",
                "Logs go to S3 etc.",
                "The end."
            ]
        );
    }

    #[test]
    fn keeps_initials_and_no_numbers() {
        assert_eq!(
            split("Owner: J. Smith. See No. 5 for details. It ends here."),
            vec![
                "Owner: J. Smith.",
                "See No. 5 for details.",
                "It ends here."
            ]
        );
    }

    #[test]
    fn cuts_very_long_runs_at_a_word() {
        let long = "word ".repeat(400);
        let parts = split(&long);
        assert!(parts.len() >= 3);
        assert!(
            parts
                .iter()
                .all(|p| p.chars().count() <= super::MAX_SENTENCE_CHARS)
        );
    }

    #[test]
    fn drops_punctuation_only_pieces() {
        assert_eq!(split("... . !"), Vec::<String>::new());
        assert_eq!(split(""), Vec::<String>::new());
    }
}
