//! Aloft's device core (no_std, sans-IO). See the crate README in ARCHITECTURE.md.
#![no_std]
#![forbid(unsafe_code)]
