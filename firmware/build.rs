//! Bakes the firmware's version and deliberate fault into the build, from
//! `ALOFT_FIRMWARE_VERSION` (default 1.0.0) and `ALOFT_FIRMWARE_FAULT`
//! (none | health | crash | hang; default none).

fn main() {
    for var in ["ALOFT_FIRMWARE_VERSION", "ALOFT_FIRMWARE_FAULT"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let version = std::env::var("ALOFT_FIRMWARE_VERSION").unwrap_or_else(|_| "1.0.0".into());
    let fault = std::env::var("ALOFT_FIRMWARE_FAULT").unwrap_or_else(|_| "none".into());
    let valid_version = {
        let parts: Vec<&str> = version.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    assert!(
        valid_version,
        "ALOFT_FIRMWARE_VERSION={version:?} is not MAJOR.MINOR.PATCH"
    );
    assert!(
        ["none", "health", "crash", "hang"].contains(&fault.as_str()),
        "ALOFT_FIRMWARE_FAULT={fault:?} is not one of none, health, crash, hang"
    );
    println!("cargo:rustc-env=ALOFT_BAKED_VERSION={version}");
    println!("cargo:rustc-env=ALOFT_BAKED_FAULT={fault}");
}
