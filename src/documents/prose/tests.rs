//! Fixtures (each document beside its `.expected.json`) and hostile inputs.
//! `UPDATE_EXPECTED=1 cargo test --lib documents::prose` rewrites the expected files; review the
//! diff like any other change of behaviour.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{analyse, detect, extract};
use crate::documents::analysis::{AnalysisError, Kind, Limits};

fn limits() -> Limits {
    Limits {
        deadline: Instant::now() + Duration::from_secs(30),
        max_expanded_bytes: 8 * 1024 * 1024,
        max_depth: 64,
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/documents/prose")
}

/// How long a quote prefix the expected files pin: enough to tell sentences apart.
const QUOTE_PREFIX: usize = 60;

fn summary(bytes: &[u8]) -> Value {
    let kind = detect(bytes).expect("a fixture is prose");
    let sentences = extract(kind, bytes, &limits()).expect("a fixture extracts");
    let (facts, findings) = analyse(&sentences, None);
    let findings: Vec<Value> = findings
        .iter()
        .map(|f| {
            let quote = f.quote.as_ref();
            json!({
                "control": f.control,
                "status": f.status.as_str(),
                "measure": f.measure,
                "severity": f.severity,
                "quote": quote.map(|q| q.text.chars().take(QUOTE_PREFIX).collect::<String>()),
                "page": quote.and_then(|q| q.page),
                "heading": quote.and_then(|q| q.heading.clone()),
            })
        })
        .collect();
    json!({
        "kind": kind.as_str(),
        "facts": {
            "services": facts.services,
            "data_kinds": facts.data_kinds,
            "measures": facts.measures,
            "frameworks": facts.frameworks,
            "sentences": facts.sentences,
            "pages": facts.pages,
        },
        "findings": findings,
    })
}

#[test]
fn fixtures_match_their_expected_analysis() {
    let mut seen = 0;
    let mut kinds = std::collections::BTreeSet::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".json") || name.ends_with(".py") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let got = summary(&bytes);
        kinds.insert(got["kind"].as_str().unwrap().to_string());
        let expected_path = path.with_file_name(format!("{name}.expected.json"));
        if std::env::var_os("UPDATE_EXPECTED").is_some() {
            let mut text = serde_json::to_string_pretty(&got).unwrap();
            text.push('\n');
            std::fs::write(&expected_path, text).unwrap();
        }
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|_| panic!("{} is missing", expected_path.display())),
        )
        .unwrap();
        assert_eq!(got, expected, "{name} differs from its expected analysis");
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} fixtures");
    for kind in ["markdown", "pdf", "docx"] {
        assert!(kinds.contains(kind), "no {kind} fixture");
    }
}

#[test]
fn detects_formats_by_content() {
    assert_eq!(detect(b"%PDF-1.7\n..."), Some(Kind::Pdf));
    assert_eq!(detect(b"# Title\n\nSome text.\n"), Some(Kind::Markdown));
    assert_eq!(
        detect(b"Design\n======\n\n- item one\n- item two\n"),
        Some(Kind::Markdown)
    );
    assert_eq!(
        detect(b"This is a plain note.\nIt has two lines.\n"),
        Some(Kind::Text)
    );
    assert_eq!(detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), None);
    assert_eq!(detect(&[0u8, 1, 2, 3, 255, 254]), None);
    assert_eq!(detect(b""), None);
    // A zip without word/document.xml (an .xlsx, a plain archive) is not a DOCX.
    assert_eq!(detect(&zip_of(&[("xl/workbook.xml", b"<x/>")])), None);
    assert_eq!(
        detect(&docx_of("<w:document/>")),
        Some(Kind::Docx),
        "a zip with word/document.xml"
    );
}

const W: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    out.into_inner()
}

fn docx_of(body: &str) -> Vec<u8> {
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{W}">{body}</w:document>"#
    );
    zip_of(&[("word/document.xml", xml.as_bytes())])
}

fn para(style: Option<&str>, text: &str) -> String {
    let style = style
        .map(|s| format!(r#"<w:pPr><w:pStyle w:val="{s}"/></w:pPr>"#))
        .unwrap_or_default();
    format!("<w:p>{style}<w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>")
}

#[test]
fn docx_paragraphs_headings_tables_and_entities() {
    let body = format!(
        "<w:body>{}{}{}<w:tbl><w:tr><w:tc>{}</w:tc><w:tc>{}</w:tc></w:tr></w:tbl></w:body>",
        para(Some("Title"), "Design"),
        para(Some("Heading2"), "Data &amp; storage"),
        para(
            None,
            "Records are encrypted at rest. Keys rotate &#8212; yearly."
        ),
        para(None, "S3"),
        para(None, "SSE-KMS"),
    );
    let sentences = extract(Kind::Docx, &docx_of(&body), &limits()).unwrap();
    let got: Vec<(&str, Option<&str>)> = sentences
        .iter()
        .map(|s| (s.text.as_str(), s.heading.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Records are encrypted at rest.", Some("Data & storage")),
            ("Keys rotate \u{2014} yearly.", Some("Data & storage")),
            ("S3; SSE-KMS.", Some("Data & storage")),
        ]
    );
}

fn is_too_complex(r: Result<Vec<crate::documents::analysis::Sentence>, AnalysisError>) -> bool {
    matches!(r, Err(AnalysisError::TooComplex(_)))
}

fn is_malformed(r: &Result<Vec<crate::documents::analysis::Sentence>, AnalysisError>) -> bool {
    matches!(r, Err(AnalysisError::Malformed(m)) if !m.is_empty())
}

#[test]
fn docx_zip_bomb_stops_at_the_limit() {
    // 1 GiB of zeros written in chunks (deflate keeps memory flat): about 1 MB compressed.
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        z.start_file("word/document.xml", opts).unwrap();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..1024 {
            z.write_all(&chunk).unwrap();
        }
        z.finish().unwrap();
    }
    let bomb = out.into_inner();
    assert!(bomb.len() < 4 << 20, "{} bytes", bomb.len());
    let start = Instant::now();
    assert!(is_too_complex(extract(Kind::Docx, &bomb, &limits())));

    // The same with a forged declared size: the limited reader stops it all the same.
    let mut forged = bomb.clone();
    forge_sizes(&mut forged, 100);
    let r = extract(Kind::Docx, &forged, &limits());
    assert!(is_too_complex(r.clone()) || is_malformed(&r), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// Overwrites every declared uncompressed size (local headers and central directory) with a
/// small lie.
fn forge_sizes(zip: &mut [u8], size: u32) {
    let mut i = 0;
    while i + 30 < zip.len() {
        match &zip[i..i + 4] {
            b"PK\x03\x04" => zip[i + 22..i + 26].copy_from_slice(&size.to_le_bytes()),
            b"PK\x01\x02" => zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes()),
            _ => {}
        }
        i += 1;
    }
}

#[test]
fn docx_entry_names_are_never_trusted() {
    let xml = format!(
        r#"<w:document xmlns:w="{W}"><w:body>{}</w:body></w:document>"#,
        para(None, "MFA is enforced.")
    );
    let bytes = zip_of(&[
        ("../../../tmp/evil.txt", b"owned"),
        ("/etc/passwd", b"owned"),
        ("word/document.xml", xml.as_bytes()),
    ]);
    let sentences = extract(Kind::Docx, &bytes, &limits()).unwrap();
    assert_eq!(sentences.len(), 1);
    assert_eq!(sentences[0].text, "MFA is enforced.");
}

#[test]
fn docx_refuses_doctype_and_custom_entities() {
    let lol = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>&lol2;</w:t></w:r></w:p></w:body></w:document>"#;
    let r = extract(
        Kind::Docx,
        &zip_of(&[("word/document.xml", lol.as_bytes())]),
        &limits(),
    );
    assert!(
        matches!(&r, Err(AnalysisError::Malformed(m)) if m.contains("DOCTYPE")),
        "{r:?}"
    );
    let external = r#"<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>"#;
    let r = extract(
        Kind::Docx,
        &zip_of(&[("word/document.xml", external.as_bytes())]),
        &limits(),
    );
    assert!(is_malformed(&r), "{r:?}");
    // Without a DTD, an undefined entity is an error, never expanded.
    let r = extract(
        Kind::Docx,
        &docx_of("<w:body><w:p><w:r><w:t>&lol;</w:t></w:r></w:p></w:body>"),
        &limits(),
    );
    assert!(
        matches!(&r, Err(AnalysisError::Malformed(m)) if m.contains("lol")),
        "{r:?}"
    );
}

#[test]
fn docx_deep_nesting_is_bounded() {
    let deep = format!("{}{}", "<w:x>".repeat(200), "</w:x>".repeat(200));
    assert!(is_too_complex(extract(
        Kind::Docx,
        &docx_of(&deep),
        &limits()
    )));
}

#[test]
fn docx_too_many_entries_is_refused() {
    let names: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for n in &names {
            z.start_file(n.as_str(), opts).unwrap();
        }
        z.start_file("word/document.xml", opts).unwrap();
        z.write_all(b"<d/>").unwrap();
        z.finish().unwrap();
    }
    assert!(is_too_complex(extract(
        Kind::Docx,
        &out.into_inner(),
        &limits()
    )));
}

#[test]
fn truncated_corrupt_and_random_inputs_are_clean_errors() {
    let docx = std::fs::read(fixtures().join("vendor-portal.docx")).unwrap();
    let pdf = std::fs::read(fixtures().join("claims-platform.pdf")).unwrap();
    for cut in [10, docx.len() / 3, docx.len() / 2, docx.len() - 30] {
        let r = extract(Kind::Docx, &docx[..cut], &limits());
        assert!(is_malformed(&r), "docx cut at {cut}: {r:?}");
    }
    for cut in [9, 200, pdf.len() / 3, pdf.len() / 2] {
        let r = extract(Kind::Pdf, &pdf[..cut], &limits());
        // Lenient PDF reading may recover a prefix; what matters is no panic and no hang.
        assert!(r.is_ok() || is_malformed(&r), "pdf cut at {cut}: {r:?}");
    }
    // Deterministic noise (xorshift), also behind each format's magic bytes.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = Vec::with_capacity(64 * 1024);
    for _ in 0..64 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push(x as u8);
    }
    assert_eq!(detect(&noise), None);
    for kind in [Kind::Pdf, Kind::Docx, Kind::Markdown, Kind::Text] {
        let r = extract(kind, &noise, &limits());
        assert!(r.is_err(), "{kind:?}");
    }
    let mut pdf_noise = b"%PDF-1.7\n".to_vec();
    pdf_noise.extend_from_slice(&noise);
    let r = extract(Kind::Pdf, &pdf_noise, &limits());
    assert!(r.is_ok() || is_malformed(&r), "{r:?}");
    let mut zip_noise = b"PK\x03\x04".to_vec();
    zip_noise.extend_from_slice(&noise);
    assert!(is_malformed(&extract(Kind::Docx, &zip_noise, &limits())));
}

#[test]
fn pdf_stream_bomb_is_bounded() {
    // One page whose content stream inflates to 64 MiB of spaces (about 64 KB compressed).
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&chunk).unwrap();
    }
    let stream = enc.finish().unwrap();
    let pdf = minimal_pdf(&stream, true);
    let r = extract(Kind::Pdf, &pdf, &limits());
    assert!(is_too_complex(r.clone()), "{r:?}");
}

#[test]
fn pdf_page_of_tiny_operands_is_bounded_before_parsing() {
    // Found by the `pdf` fuzz target: 14 MiB of `/` (empty names) in one page took lopdf's
    // content parser about 10 s in a single call, far past the deadline. The page content bound
    // refuses it before that parser runs.
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(b"BT /F1 12 Tf 72 720 Td (Data is encrypted at rest.) Tj ET ")
        .unwrap();
    let chunk = b"/ ".repeat(1 << 19);
    for _ in 0..7 {
        enc.write_all(&chunk).unwrap();
    }
    let pdf = minimal_pdf(&enc.finish().unwrap(), true);
    let started = Instant::now();
    let r = extract(Kind::Pdf, &pdf, &limits());
    assert!(is_too_complex(r.clone()), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A one-page PDF whose page content is `content` (FlateDecode when `flate`).
fn minimal_pdf(content: &[u8], flate: bool) -> Vec<u8> {
    let mut out: Vec<u8> = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    let filter = if flate { "/Filter /FlateDecode " } else { "" };
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
        {
            let mut s = format!("<< {filter}/Length {} >>\nstream\n", content.len()).into_bytes();
            s.extend_from_slice(content);
            s.extend_from_slice(b"\nendstream");
            s
        },
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ];
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(o);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[test]
fn pdf_text_has_page_numbers() {
    let pdf = minimal_pdf(
        b"BT /F1 12 Tf 72 700 Td (Backups are taken nightly. RDS is encrypted at rest.) Tj ET",
        false,
    );
    let sentences = extract(Kind::Pdf, &pdf, &limits()).unwrap();
    let got: Vec<(&str, Option<u32>)> = sentences
        .iter()
        .map(|s| (s.text.as_str(), s.page))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Backups are taken nightly.", Some(1)),
            ("RDS is encrypted at rest.", Some(1)),
        ]
    );
}

#[test]
fn markdown_structure_and_markup() {
    let md = "---\ntitle: x\n---\n# Storage\n\nPatient records live in **Aurora** ([docs](https://x)).\n\n\
              Setext heading\n--------------\n\n- Item one is `encrypted` at rest\n- Item two\n  continues here\n\n\
              ```yaml\nEncrypted: false\n```\n\n| Component | Encryption |\n|---|---|\n| S3 | SSE-KMS |\n\n\
              > Quoted note.\n\n<!-- hidden\ncomment -->\nDone.";
    let sentences = extract(Kind::Markdown, md.as_bytes(), &limits()).unwrap();
    let got: Vec<(&str, Option<&str>)> = sentences
        .iter()
        .map(|s| (s.text.as_str(), s.heading.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Patient records live in Aurora (docs).", Some("Storage")),
            ("Item one is encrypted at rest", Some("Setext heading")),
            ("Item two continues here", Some("Setext heading")),
            ("Component; Encryption.", Some("Setext heading")),
            ("S3; SSE-KMS.", Some("Setext heading")),
            ("Quoted note.", Some("Setext heading")),
            ("Done.", Some("Setext heading")),
        ]
    );
}

#[test]
fn plain_text_guesses_headings() {
    let text = "Network Design\n\nAll databases sit in private subnets. Only the ALB is public.\n\n1. Security groups allow port 443 only.\n";
    let sentences = extract(Kind::Text, text.as_bytes(), &limits()).unwrap();
    assert_eq!(sentences.len(), 3);
    assert!(
        sentences
            .iter()
            .all(|s| s.heading.as_deref() == Some("Network Design"))
    );
    assert_eq!(sentences[2].text, "Security groups allow port 443 only.");
}

#[test]
fn expired_deadline_stops_extraction() {
    let l = Limits {
        deadline: Instant::now() - Duration::from_secs(1),
        ..limits()
    };
    assert!(is_too_complex(extract(Kind::Markdown, b"# A\n\ntext", &l)));
}

#[test]
fn scope_follows_the_content_or_the_request() {
    let s = |t: &str| crate::documents::analysis::Sentence {
        text: t.into(),
        page: None,
        heading: None,
    };
    let doc = [
        s("Patient records are stored in Amazon RDS."),
        s("The database is encrypted at rest with KMS."),
    ];
    let (facts, findings) = analyse(&doc, None);
    assert_eq!(facts.data_kinds, vec!["health_records"]);
    assert_eq!(
        facts.frameworks,
        vec!["hipaa-sr", "soc2", "cis-aws", "aws-fsbp", "aws-wa-security"]
    );
    assert!(
        findings
            .iter()
            .any(|f| f.control == "hipaa-sr:164.312(a)(2)(iv)"
                && f.status == crate::documents::analysis::Status::Addressed)
    );
    // Asked for one CIS version only: no controls of the other.
    let asked = vec!["cis-aws@5.0.0".to_string()];
    let (facts, findings) = analyse(&doc, Some(&asked));
    assert_eq!(facts.frameworks, asked);
    assert!(!findings.is_empty());
    assert!(
        findings
            .iter()
            .all(|f| f.control.starts_with("cis-aws@5.0.0:"))
    );
    // Silent findings come before addressed ones.
    use crate::documents::analysis::Status;
    let rank = |s: Status| match s {
        Status::Contradicted => 0,
        Status::Silent => 1,
        _ => 2,
    };
    let ranks: Vec<u8> = findings.iter().map(|f| rank(f.status)).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
}
