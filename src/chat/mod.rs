//! The security Q&A chat: understanding a question, retrieving from the KB, answering.

pub mod answer;
pub mod understand;
