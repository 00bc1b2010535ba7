//! The document parsers of the main crate, compiled on their own for fuzzing.
//!
//! The modules are laid out as in the main crate so the sources' `crate::documents::…`,
//! `crate::kb::…` and `super::…` paths resolve unchanged; nothing here is a copy.

#![allow(dead_code)]

// A path on an inline module names the directory of the modules declared inside it.
#[path = "../../src/documents"]
pub mod documents {
    pub mod analysis;
    pub mod iac;
    pub mod prose;
}

#[path = "../../src/aws_facts.rs"]
pub mod aws_facts;

#[path = "../../src/kb"]
pub mod kb {
    pub mod vocabulary;
}

use std::time::{Duration, Instant};

use documents::analysis::Limits;

/// Tighter than the server's bounds, so a slow or greedy input shows up as a libFuzzer timeout or
/// out-of-memory report rather than hiding under a generous budget.
pub fn limits() -> Limits {
    Limits {
        deadline: Instant::now() + Duration::from_secs(2),
        max_expanded_bytes: 16 << 20,
        max_depth: 64,
    }
}
