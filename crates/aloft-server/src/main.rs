//! The `aloft-server` binary.
fn main() {}
