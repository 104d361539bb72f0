//! Where things live on flash: a state partition and two image slots.

use embedded_storage::nor_flash::NorFlash;

use crate::Error;
use crate::state::record_len;

/// Bytes reserved by default at the end of each slot for the slot's signed
/// manifest envelope (a 4-byte length, then the envelope); rounded up to
/// whole sectors.
pub const DEFAULT_MANIFEST_AREA: u32 = 4096;

/// Largest write granularity the device core supports.
pub const MAX_WRITE_SIZE: usize = 32;

/// One of the two image slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Slot A (holds the factory image).
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }

    pub(crate) const fn from_index(i: u8) -> Option<Self> {
        match i {
            0 => Some(Self::A),
            1 => Some(Self::B),
            _ => None,
        }
    }
}

/// A region of the flash: `size` bytes from `offset`, erased in sectors of
/// `sector_size` bytes (a multiple of the flash's `ERASE_SIZE`; lets a
/// partition sit in a region of larger sectors on a non-uniform part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Start, in bytes from the start of the flash.
    pub offset: u32,
    /// Length in bytes (a multiple of `sector_size`).
    pub size: u32,
    /// Erase unit within this partition.
    pub sector_size: u32,
}

impl Partition {
    /// A partition of `size` bytes at `offset` with erase unit `sector_size`.
    pub const fn new(offset: u32, size: u32, sector_size: u32) -> Self {
        Self {
            offset,
            size,
            sector_size,
        }
    }

    /// One past the last byte.
    pub const fn end(&self) -> u32 {
        self.offset + self.size
    }

    fn overlaps(&self, other: &Self) -> bool {
        self.offset < other.end() && other.offset < self.end()
    }
}

/// The device's flash map: state partition, slot A and slot B on one flash.
///
/// Each slot holds the image from its start and, in its last
/// [`Layout::trailer_len`] bytes, the signed manifest envelope that lets the
/// bootloader re-verify the image at every boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The power-safe state log (split into two halves, see [`crate::state`]).
    pub state: Partition,
    /// Slot A.
    pub slot_a: Partition,
    /// Slot B.
    pub slot_b: Partition,
    /// Bytes reserved for the manifest at the end of each slot.
    pub manifest_area: u32,
}

impl Layout {
    /// The partition of `slot`.
    pub const fn slot(&self, slot: Slot) -> &Partition {
        match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }

    /// Bytes at the end of `slot` reserved for its manifest (whole sectors).
    pub const fn trailer_len(&self, slot: Slot) -> u32 {
        let sector = self.slot(slot).sector_size;
        self.manifest_area.div_ceil(sector) * sector
    }

    /// The largest image `slot` can hold.
    pub const fn image_capacity(&self, slot: Slot) -> u32 {
        self.slot(slot).size - self.trailer_len(slot)
    }

    /// Offset of `slot`'s manifest trailer.
    pub(crate) const fn trailer_offset(&self, slot: Slot) -> u32 {
        self.slot(slot).end() - self.trailer_len(slot)
    }

    /// Bytes in each half ("bank") of the state partition.
    pub(crate) const fn bank_size(&self) -> u32 {
        self.state.size / 2
    }

    /// Checks the layout against flash `F` of `capacity` bytes: alignment to
    /// `F::ERASE_SIZE` and `F::WRITE_SIZE`, no overlap, each state bank whole
    /// sectors holding at least two records, slots with room for an image.
    pub fn validate<F: NorFlash>(&self, capacity: usize) -> Result<(), Error> {
        if F::WRITE_SIZE == 0 || F::WRITE_SIZE > MAX_WRITE_SIZE {
            return Err(Error::InvalidLayout("flash WRITE_SIZE must be 1..=32"));
        }
        if F::READ_SIZE == 0 || F::READ_SIZE > MAX_WRITE_SIZE {
            return Err(Error::InvalidLayout("flash READ_SIZE must be 1..=32"));
        }
        let parts = [&self.state, &self.slot_a, &self.slot_b];
        for p in parts {
            let sector = p.sector_size as usize;
            if sector == 0 || !sector.is_multiple_of(F::ERASE_SIZE) {
                return Err(Error::InvalidLayout(
                    "sector size must be a multiple of ERASE_SIZE",
                ));
            }
            if !sector.is_multiple_of(F::WRITE_SIZE) || !sector.is_multiple_of(F::READ_SIZE) {
                return Err(Error::InvalidLayout(
                    "sector size must be a multiple of WRITE_SIZE",
                ));
            }
            if !(p.offset as usize).is_multiple_of(F::ERASE_SIZE)
                || p.size % p.sector_size != 0
                || p.size == 0
            {
                return Err(Error::InvalidLayout("partition not aligned to its sectors"));
            }
            if p.end() as usize > capacity || p.end() < p.offset {
                return Err(Error::InvalidLayout("partition beyond the flash"));
            }
        }
        if self.state.overlaps(&self.slot_a)
            || self.state.overlaps(&self.slot_b)
            || self.slot_a.overlaps(&self.slot_b)
        {
            return Err(Error::InvalidLayout("partitions overlap"));
        }
        let bank = self.bank_size();
        if !bank.is_multiple_of(self.state.sector_size) || bank == 0 {
            return Err(Error::InvalidLayout(
                "state partition must be two halves of whole sectors",
            ));
        }
        if (bank as usize) < 2 * record_len::<F>() {
            return Err(Error::InvalidLayout(
                "each state half must hold two records",
            ));
        }
        if self.manifest_area < 512 {
            return Err(Error::InvalidLayout("manifest area below 512 bytes"));
        }
        for slot in [Slot::A, Slot::B] {
            if self.trailer_len(slot) >= self.slot(slot).size {
                return Err(Error::InvalidLayout("slot has no room for an image"));
            }
        }
        Ok(())
    }
}
