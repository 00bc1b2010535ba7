#![no_main]

use cloud_optimizer_fuzz::documents::{analysis::Kind, iac};
use libfuzzer_sys::fuzz_target;

// Any bytes: an `Err` is the expected answer to most of them; a panic, hang or runaway
// allocation is the bug.
fuzz_target!(|data: &[u8]| {
    let _ = iac::analyse(Kind::Terraform, data, &cloud_optimizer_fuzz::limits());
});
