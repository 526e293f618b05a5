//! rules tests
