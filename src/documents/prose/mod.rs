//! Prose: text of PDF, DOCX, Markdown and plain-text documents, and what it says about the
//! security of the design it describes.
