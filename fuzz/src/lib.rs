//! Shared parts of Aloft's fuzz targets and of the seed generator: fixed
//! keys and the objects signed with them ([`fixtures`]), the small byte
//! formats the multi-input targets read ([`ops`]), and the seed corpus
//! itself ([`seeds`]), so the targets and their seeds can never disagree on
//! a key, a layout or an op code.
//!
//! Everything is deterministic: keys are fixed scalars, ECDSA is RFC 6979,
//! and the one randomised operation (content-key wrapping) draws from
//! [`fixtures::DetRng`]. A crash input therefore reproduces exactly.
#![forbid(unsafe_code)]

pub mod fixtures;
pub mod ops;
pub mod seeds;
