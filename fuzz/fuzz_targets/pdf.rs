#![no_main]

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use cloud_optimizer_fuzz::documents::{analysis::Kind, prose};
use libfuzzer_sys::fuzz_target;

static HOOK: Once = Once::new();

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

// Extraction and the analysis of whatever text comes out: an `Err` is fine, a panic, hang or
// runaway allocation is the bug.
fuzz_target!(|data: &[u8]| {
    // `lopdf` panics on some malformed files and the PDF reader turns those panics into
    // `Malformed` (`catch_unwind`), which the server relies on. libFuzzer's hook aborts on every
    // panic before it could be caught, so it is replaced by one that only remembers the message;
    // a panic that escapes the reader is still a crash, reported with that message.
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
        }))
    });
    let run = catch_unwind(AssertUnwindSafe(|| {
        if let Ok(sentences) = prose::extract(Kind::Pdf, data, &cloud_optimizer_fuzz::limits()) {
            let _ = prose::analyse(&sentences, None);
        }
    }));
    if run.is_err() {
        let message = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_default();
        eprintln!("panic escaped the PDF reader: {message}");
        std::process::abort();
    }
});
