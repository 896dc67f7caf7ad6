//! Helpers for the end-to-end tests in this package (see `e2e/`).
