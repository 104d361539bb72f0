//! The `aloft` operator CLI.
fn main() {}
