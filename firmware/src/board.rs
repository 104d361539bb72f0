//! The sample device's "board": its product and hardware names and its flash
//! map, shared by the factory step, the boot simulator and the firmware.
//!
//! The flash is one file: a state partition of [`STATE_SIZE`] bytes, then
//! slot A and slot B of equal size. The slot size is not stored anywhere:
//! it follows from the file's length ([`layout_for_len`]), so a device
//! provisioned with a larger slot (for instance for unstripped test builds)
//! needs no extra configuration.

use std::path::Path;

use aloft_device::{Layout, Partition};

pub use aloft_agent::{Durability, FileFlashError};

/// The simulated board's flash: 4-byte program words, 4 KiB sectors.
pub type FileFlash = aloft_agent::FileFlash<4, { SECTOR as usize }>;

/// Product name of the sample firmware.
pub const PRODUCT: &str = "aloft-sample";
/// Hardware revision of the simulated board.
pub const HARDWARE: &str = "sim-1";
/// Erase sector size of the simulated NOR flash.
pub const SECTOR: u32 = 4096;
/// Size of the state partition: two halves of the state log (7 sectors
/// each) and two TrustRoot copies (one sector each).
pub const STATE_SIZE: u32 = 16 * SECTOR;
/// Default slot size: the stripped firmware image (about 5 MB with the
/// `firmware` profile) with room to grow.
pub const DEFAULT_SLOT_SIZE: u32 = 8 * 1024 * 1024;

/// Why a flash length or slot size is not a valid board.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "flash of {len} bytes is not {STATE_SIZE} bytes of state plus two equal slots of whole {SECTOR}-byte sectors"
)]
pub struct BadFlashSize {
    /// The length found.
    pub len: u64,
}

/// The layout with slots of `slot_size` bytes (a multiple of [`SECTOR`]).
pub fn layout(slot_size: u32) -> Layout {
    Layout {
        state: Partition::new(0, STATE_SIZE, SECTOR),
        slot_a: Partition::new(STATE_SIZE, slot_size, SECTOR),
        slot_b: Partition::new(STATE_SIZE + slot_size, slot_size, SECTOR),
        manifest_area: aloft_device::DEFAULT_MANIFEST_AREA,
        trust_area: aloft_device::DEFAULT_TRUST_AREA,
    }
}

/// Total flash bytes for slots of `slot_size` bytes.
pub const fn flash_len(slot_size: u32) -> u64 {
    STATE_SIZE as u64 + 2 * slot_size as u64
}

/// The layout of a flash file of `len` bytes.
pub fn layout_for_len(len: u64) -> Result<Layout, BadFlashSize> {
    let bad = BadFlashSize { len };
    let slots = len.checked_sub(u64::from(STATE_SIZE)).ok_or(bad.clone())?;
    let slot = slots / 2;
    if slots % 2 != 0 || slot == 0 || slot % u64::from(SECTOR) != 0 {
        return Err(bad);
    }
    let slot = u32::try_from(slot).map_err(|_| bad.clone())?;
    if u64::from(slot) * 2 + u64::from(STATE_SIZE) > u64::from(u32::MAX) {
        return Err(bad);
    }
    Ok(layout(slot))
}

/// The largest image a slot of `slot_size` bytes holds.
pub fn image_capacity(slot_size: u32) -> u32 {
    layout(slot_size).image_capacity(aloft_device::Slot::A)
}

/// Opens an existing flash file and derives its layout from its length.
pub fn open_flash(path: &Path) -> Result<(FileFlash, Layout), crate::BoardError> {
    let flash = FileFlash::open(path, Durability::Sync)?;
    let layout =
        layout_for_len(embedded_storage::nor_flash::ReadNorFlash::capacity(&flash) as u64)?;
    Ok((flash, layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_file_length() {
        let l = layout_for_len(flash_len(DEFAULT_SLOT_SIZE)).unwrap();
        assert_eq!(l, layout(DEFAULT_SLOT_SIZE));
        assert!(
            l.validate::<FileFlash>(flash_len(DEFAULT_SLOT_SIZE) as usize)
                .is_ok()
        );
        for len in [
            0,
            u64::from(STATE_SIZE),
            flash_len(SECTOR) + 1,
            flash_len(SECTOR) + u64::from(SECTOR),
        ] {
            assert_eq!(layout_for_len(len), Err(BadFlashSize { len }));
        }
    }
}
