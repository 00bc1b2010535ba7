#![no_main]

use cloud_optimizer_fuzz::documents::{analysis::Kind, prose};
use libfuzzer_sys::fuzz_target;

// Extraction and the analysis of whatever text comes out: an `Err` is fine, a panic, hang or
// runaway allocation is the bug.
fuzz_target!(|data: &[u8]| {
    if let Ok(sentences) = prose::extract(Kind::Docx, data, &cloud_optimizer_fuzz::limits()) {
        let _ = prose::analyse(&sentences, None);
    }
});
