//! Architecture-document analysis: an uploaded design document or template, analysed in the
//! background into findings against every framework, billed as `DocumentAnalysis`.

pub mod analysis;
pub mod iac;
pub mod prose;
