//! The document analysers of the main crate, compiled on their own (see Cargo.toml). The modules
//! are laid out as in the main crate so the sources' `crate::documents::…`, `crate::kb::…` and
//! `super::…` paths resolve unchanged; nothing here is a copy, except `pipeline::detect`, whose
//! module in the main crate also maps findings through the KB (and so needs the database layer).

#![allow(dead_code)]

#[path = "../../../src/documents"]
pub mod documents {
    pub mod analysis;
    pub mod iac;
    pub mod prose;

    pub mod pipeline {
        use super::analysis::Kind;

        /// As `documents::pipeline::detect`: templates first, then prose.
        pub fn detect(bytes: &[u8]) -> Option<Kind> {
            super::iac::detect(bytes).or_else(|| super::prose::detect(bytes))
        }
    }
}

#[path = "../../../src/aws_facts.rs"]
pub mod aws_facts;

#[path = "../../../src/kb"]
pub mod kb {
    pub mod vocabulary;
}
