//! The security Q&A chat. (Minimal module for the LLM work; the lead's mod.rs replaces it.)

pub mod llm;
