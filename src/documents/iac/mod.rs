//! Infrastructure as code: CloudFormation and Terraform templates evaluated statically with the
//! catalogue's checks.
