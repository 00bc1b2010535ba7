//! AWS account security scans: the catalogue's checks run live against the account the product
//! runs in or any account that grants a role, findings mapped to every framework through the KB.

pub mod checks;
