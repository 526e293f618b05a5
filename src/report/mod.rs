//! For people: the progress line and the end-of-run summary, human and JSON.

pub(crate) mod summary;
