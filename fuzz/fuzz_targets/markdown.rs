#![no_main]

use cloud_optimizer_fuzz::documents::{analysis::Kind, prose};
use libfuzzer_sys::fuzz_target;

// The same bytes as Markdown and as plain text, then the measure analysis of the sentences:
// the two text readers share the sentence splitter and the analysis, so one target covers both.
fuzz_target!(|data: &[u8]| {
    for kind in [Kind::Markdown, Kind::Text] {
        if let Ok(sentences) = prose::extract(kind, data, &cloud_optimizer_fuzz::limits()) {
            let _ = prose::analyse(&sentences, None);
        }
    }
});
