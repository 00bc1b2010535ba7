#![no_main]

use cloud_optimizer_fuzz::documents::{iac, prose};
use libfuzzer_sys::fuzz_target;

// Detection runs on every upload before any bound applies (it takes no `Limits`), so it must be
// total and cheap on anything.
fuzz_target!(|data: &[u8]| {
    let _ = iac::detect(data);
    let _ = prose::detect(data);
});
