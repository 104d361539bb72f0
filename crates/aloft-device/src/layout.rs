//! Where things live on flash: a state partition and two image slots.

use embedded_storage::nor_flash::NorFlash;

use crate::Error;
use crate::state::record_len;

/// Bytes reserved by default at the end of each slot for the slot's signed
/// manifest envelope (a 4-byte length, then the envelope); rounded up to
/// whole sectors.
pub const DEFAULT_MANIFEST_AREA: u32 = 4096;

/// Bytes reserved by default in the state partition for each of the two
/// TrustRoot copies (a 4-byte length, then the envelope); rounded up to whole
/// sectors.
pub const DEFAULT_TRUST_AREA: u32 = 4096;

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
/// bootloader re-verify the image at every boot. The state partition ends
/// with two TrustRoot copies of [`Layout::trust_len`] bytes each; the rest
/// is the two halves of the state log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The power-safe state log and the TrustRoot copies (see [`crate::state`]).
    pub state: Partition,
    /// Slot A.
    pub slot_a: Partition,
    /// Slot B.
    pub slot_b: Partition,
    /// Bytes reserved for the manifest at the end of each slot.
    pub manifest_area: u32,
    /// Bytes reserved for each of the two TrustRoot copies at the end of
    /// the state partition.
    pub trust_area: u32,
}

/// The flash's real erase sectors. `embedded-storage` describes a flash by
/// one `ERASE_SIZE`; parts with regions of larger sectors (and drivers that
/// report the smallest) need this to show what an erase really covers, so
/// [`Layout::check_geometry`] can refuse a partition whose declared sectors
/// split a physical one.
pub trait EraseSectors {
    /// The physical erase sector holding `offset`: its start and size, or
    /// `None` past the end.
    fn sector_at(&self, offset: u32) -> Option<(u32, u32)>;
}

impl<T: EraseSectors + ?Sized> EraseSectors for &T {
    fn sector_at(&self, offset: u32) -> Option<(u32, u32)> {
        (**self).sector_at(offset)
    }
}

impl<T: EraseSectors + ?Sized> EraseSectors for &mut T {
    fn sector_at(&self, offset: u32) -> Option<(u32, u32)> {
        (**self).sector_at(offset)
    }
}

/// [`EraseSectors::sector_at`] for a flash of uniform `ERASE_SIZE` sectors.
pub fn uniform_sector_at(erase_size: usize, capacity: usize, offset: u32) -> Option<(u32, u32)> {
    let size = erase_size as u32;
    if size == 0 || offset as usize >= capacity {
        return None;
    }
    Some((offset / size * size, size))
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

    /// Bytes of each TrustRoot copy (whole state sectors).
    pub const fn trust_len(&self) -> u32 {
        let sector = self.state.sector_size;
        self.trust_area.div_ceil(sector) * sector
    }

    /// Offset of TrustRoot copy `copy` (0 or 1).
    pub(crate) const fn trust_offset(&self, copy: u8) -> u32 {
        self.state.end() - (2 - copy as u32) * self.trust_len()
    }

    /// Bytes in each half ("bank") of the state log.
    pub(crate) const fn bank_size(&self) -> u32 {
        self.state.size.saturating_sub(2 * self.trust_len()) / 2
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
        if self.trust_area < 512 {
            return Err(Error::InvalidLayout("trust area below 512 bytes"));
        }
        if 2 * u64::from(self.trust_len()) >= u64::from(self.state.size) {
            return Err(Error::InvalidLayout(
                "state partition has no room for its log beside two TrustRoot copies",
            ));
        }
        let bank = self.bank_size();
        if !bank.is_multiple_of(self.state.sector_size)
            || bank == 0
            || 2 * bank + 2 * self.trust_len() != self.state.size
        {
            return Err(Error::InvalidLayout(
                "state log must be two halves of whole sectors",
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

    /// Checks every declared sector of every partition against the flash's
    /// real erase sectors: each must start and end on a physical sector
    /// boundary, so an erase of one declared sector never touches another
    /// (a state bank declared with 4 KiB sectors inside one 8 KiB physical
    /// sector would erase the other bank's newest record).
    pub fn check_geometry(&self, flash: &impl EraseSectors) -> Result<(), Error> {
        let starts_sector = |at: u32| flash.sector_at(at).is_some_and(|(start, _)| start == at);
        for p in [&self.state, &self.slot_a, &self.slot_b] {
            let mut at = p.offset;
            while at < p.end() {
                if !starts_sector(at) {
                    return Err(Error::InvalidLayout(
                        "a declared sector does not start on a physical erase sector of the flash",
                    ));
                }
                at += p.sector_size;
            }
            // The partition's end is a boundary too: the flash's end, or the
            // start of the next physical sector.
            if flash.sector_at(p.end()).is_some() && !starts_sector(p.end()) {
                return Err(Error::InvalidLayout(
                    "a partition ends inside a physical erase sector of the flash",
                ));
            }
        }
        Ok(())
    }
}
