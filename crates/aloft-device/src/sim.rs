//! A NOR flash simulator with real semantics and fault injection
//! (feature `sim`).
//!
//! - erase sets every byte of whole sectors to 0xFF; an erase must start and
//!   end on sector boundaries of the sector map (uniform or not);
//! - a write needs `WRITE_SIZE` alignment and may only program erased bytes:
//!   programming a byte that is not 0xFF is an error ([`SimError::NotErased`]),
//!   stricter than bit-clearing, as many parts forbid double programming;
//! - every erase and write is one *operation*, counted; reads are free.
//!
//! Faults ([`Fault`]) strike at a given operation index: the power is cut
//! before it, or it is torn (a write programs a prefix of its words, the last
//! one partly; an erase leaves some bytes of a sector with their old value),
//! and every later operation, reads included, fails with
//! [`SimError::PowerLost`] until [`SimFlash::power_cycle`].

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// A simulated flash error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// Offset or length not aligned to the write size or the sector map.
    NotAligned,
    /// Beyond the end of the flash.
    OutOfBounds,
    /// A write hit a byte that was not erased (at this offset).
    NotErased {
        /// Offset of the first programmed byte.
        offset: u32,
    },
    /// The power is off (a fault struck); call [`SimFlash::power_cycle`].
    PowerLost,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotErased { .. } | Self::PowerLost => NorFlashErrorKind::Other,
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAligned => f.write_str("not aligned"),
            Self::OutOfBounds => f.write_str("out of bounds"),
            Self::NotErased { offset } => write!(f, "programming non-erased byte at {offset}"),
            Self::PowerLost => f.write_str("power lost"),
        }
    }
}

/// How a fault strikes its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultMode {
    /// The power is cut before the operation: it has no effect.
    PowerCut,
    /// A write programs a prefix of its words, the last one partly, then the
    /// power is cut (an erase struck in this mode is cut before it starts).
    TornWrite,
    /// An erase leaves some bytes of one sector with their old value (the
    /// sectors before it erased, those after it untouched), then the power is
    /// cut (a write struck in this mode is cut before it starts).
    PartialErase,
}

/// A scheduled fault: `mode` at operation `at` (0-based, see [`SimFlash::ops`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// How it strikes.
    pub mode: FaultMode,
    /// The operation it strikes.
    pub at: u64,
}

/// Kind of a counted operation (see [`SimFlash::trace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A program operation.
    Write,
    /// An erase operation.
    Erase,
}

/// The simulated flash. `W` is the write size, `E` the smallest sector.
#[derive(Clone)]
pub struct SimFlash<const W: usize, const E: usize> {
    data: Vec<u8>,
    /// Sector start offsets, ascending, plus the capacity as a sentinel.
    bounds: Vec<u32>,
    ops: u64,
    fault: Option<Fault>,
    powered: bool,
    tracing: bool,
    trace: Vec<OpKind>,
}

impl<const W: usize, const E: usize> fmt::Debug for SimFlash<W, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFlash")
            .field("capacity", &self.data.len())
            .field("sectors", &(self.bounds.len() - 1))
            .field("ops", &self.ops)
            .field("powered", &self.powered)
            .finish()
    }
}

impl<const W: usize, const E: usize> SimFlash<W, E> {
    /// `sectors` uniform sectors of `E` bytes, all erased.
    pub fn uniform(sectors: usize) -> Self {
        Self::with_sectors(&vec![E as u32; sectors])
    }

    /// A flash with the given sector sizes in order (each a positive multiple
    /// of `E`), all erased.
    ///
    /// # Panics
    /// If a size is not a positive multiple of `E` or `W` is zero.
    pub fn with_sectors(sizes: &[u32]) -> Self {
        assert!(
            W > 0 && E > 0 && E.is_multiple_of(W),
            "E must be a multiple of W"
        );
        let mut bounds = Vec::with_capacity(sizes.len() + 1);
        let mut at = 0u32;
        for &s in sizes {
            assert!(
                s > 0 && (s as usize).is_multiple_of(E),
                "sector size must be a multiple of E"
            );
            bounds.push(at);
            at += s;
        }
        bounds.push(at);
        Self {
            data: vec![0xFF; at as usize],
            bounds,
            ops: 0,
            fault: None,
            powered: true,
            tracing: false,
            trace: Vec::new(),
        }
    }

    /// Operations (erases and writes) performed or attempted so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Starts or stops recording the kind of each operation (off by default,
    /// as recording allocates).
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
    }

    /// Kinds of the operations counted while tracing, in order.
    pub fn trace(&self) -> &[OpKind] {
        &self.trace
    }

    /// Schedules `fault` (replacing any other).
    pub fn arm(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// Cancels a scheduled fault.
    pub fn disarm(&mut self) {
        self.fault = None;
    }

    /// Whether the power is on.
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Restores power (a reboot) and cancels any scheduled fault.
    pub fn power_cycle(&mut self) {
        self.powered = true;
        self.fault = None;
    }

    /// The raw contents.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The raw contents, writable without any flash rule: for tests that
    /// tamper with the medium (an attacker or bit rot).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    fn seed(&self) -> u64 {
        // A deterministic per-operation mix (splitmix64 of the index).
        let mut z = self.ops.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Counts an operation; returns the fault mode if one strikes it.
    fn begin_op(&mut self, kind: OpKind) -> Result<Option<FaultMode>, SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        let strike = self.fault.filter(|f| f.at == self.ops).map(|f| f.mode);
        if self.tracing {
            self.trace.push(kind);
        }
        Ok(strike)
    }

    fn is_boundary(&self, at: u32) -> bool {
        self.bounds.binary_search(&at).is_ok()
    }
}

impl<const W: usize, const E: usize> crate::layout::EraseSectors for SimFlash<W, E> {
    fn sector_at(&self, offset: u32) -> Option<(u32, u32)> {
        let i = match self.bounds.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.checked_sub(1)?,
        };
        let (start, end) = (*self.bounds.get(i)?, *self.bounds.get(i + 1)?);
        Some((start, end - start))
    }
}

impl<const W: usize, const E: usize> ErrorType for SimFlash<W, E> {
    type Error = SimError;
}

impl<const W: usize, const E: usize> ReadNorFlash for SimFlash<W, E> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        let start = offset as usize;
        let end = start
            .checked_add(bytes.len())
            .ok_or(SimError::OutOfBounds)?;
        let src = self.data.get(start..end).ok_or(SimError::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const W: usize, const E: usize> NorFlash for SimFlash<W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        if from > to || to as usize > self.data.len() {
            return Err(SimError::OutOfBounds);
        }
        if !self.is_boundary(from) || !self.is_boundary(to) {
            return Err(SimError::NotAligned);
        }
        let strike = self.begin_op(OpKind::Erase)?;
        let seed = self.seed();
        self.ops += 1;
        match strike {
            None => {
                self.data[from as usize..to as usize].fill(0xFF);
                Ok(())
            }
            Some(FaultMode::PartialErase) => {
                let first = self.bounds.binary_search(&from).unwrap_or(0);
                let last = self.bounds.binary_search(&to).unwrap_or(first);
                let n = (last - first).max(1);
                let hit = first + (seed as usize % n);
                for s in first..last {
                    let (a, b) = (self.bounds[s] as usize, self.bounds[s + 1] as usize);
                    if s < hit {
                        self.data[a..b].fill(0xFF);
                    } else if s == hit {
                        let scattered = (seed >> 32) & 1 == 0;
                        for (i, byte) in self.data[a..b].iter_mut().enumerate() {
                            let keep = if scattered {
                                (i as u64)
                                    .wrapping_mul(seed | 1)
                                    .rotate_left(17)
                                    .is_multiple_of(4)
                            } else {
                                i >= (b - a) / 2
                            };
                            if !keep {
                                *byte = 0xFF;
                            }
                        }
                    }
                }
                self.powered = false;
                Err(SimError::PowerLost)
            }
            Some(_) => {
                self.powered = false;
                Err(SimError::PowerLost)
            }
        }
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        let start = offset as usize;
        let end = start
            .checked_add(bytes.len())
            .ok_or(SimError::OutOfBounds)?;
        if end > self.data.len() {
            return Err(SimError::OutOfBounds);
        }
        if !start.is_multiple_of(W) || !bytes.len().is_multiple_of(W) {
            return Err(SimError::NotAligned);
        }
        let strike = self.begin_op(OpKind::Write)?;
        let seed = self.seed();
        self.ops += 1;
        let target = &self.data[start..end];
        if !is_erased(target) {
            let i = target.iter().position(|&b| b != 0xFF).unwrap_or(0);
            return Err(SimError::NotErased {
                offset: (start + i) as u32,
            });
        }
        match strike {
            None => {
                self.data[start..end].copy_from_slice(bytes);
                Ok(())
            }
            Some(FaultMode::TornWrite) => {
                let words = bytes.len() / W;
                if words > 0 {
                    let full = seed as usize % words;
                    let done = full * W;
                    self.data[start..start + done].copy_from_slice(&bytes[..done]);
                    // The last word: some bytes programmed, one only partly.
                    let partial = (seed >> 32) as usize % W;
                    let word = start + done;
                    self.data[word..word + partial].copy_from_slice(&bytes[done..done + partial]);
                    // Only some bits of this byte got cleared.
                    self.data[word + partial] &= bytes[done + partial] | 0x0F;
                }
                self.powered = false;
                Err(SimError::PowerLost)
            }
            Some(_) => {
                self.powered = false;
                Err(SimError::PowerLost)
            }
        }
    }
}

/// Whether every byte of `bytes` is 0xFF: a branch-free AND over 64-byte
/// blocks (which the compiler vectorises), then the tail.
fn is_erased(bytes: &[u8]) -> bool {
    let blocks = bytes.chunks_exact(64);
    let tail = blocks.remainder();
    blocks
        .map(|b| b.iter().fold(0xFF, |acc, &x| acc & x))
        .all(|acc| acc == 0xFF)
        && tail.iter().all(|&b| b == 0xFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sim = SimFlash<4, 256>;

    #[test]
    fn erase_sets_ff_and_write_only_programs_erased_bytes() {
        let mut f = Sim::uniform(4);
        f.write(0, &[1, 2, 3, 4]).unwrap();
        assert_eq!(&f.bytes()[..4], &[1, 2, 3, 4]);
        assert_eq!(
            f.write(0, &[0, 0, 0, 0]),
            Err(SimError::NotErased { offset: 0 })
        );
        f.erase(0, 256).unwrap();
        assert!(f.bytes()[..256].iter().all(|&b| b == 0xFF));
        f.write(0, &[0, 0, 0, 0]).unwrap();
        assert_eq!(f.ops(), 4);
    }

    #[test]
    fn a_single_programmed_byte_anywhere_refuses_the_write() {
        // Lengths around the 64-byte blocks of the erased check, every position.
        for len in [4usize, 60, 64, 68, 128, 200] {
            for at in 0..len {
                let mut f = Sim::uniform(1);
                f.bytes_mut()[at] = 0xFE;
                assert_eq!(
                    f.write(0, &vec![0u8; len]),
                    Err(SimError::NotErased { offset: at as u32 }),
                    "len {len}, byte {at}"
                );
                assert!(
                    f.bytes()[..len]
                        .iter()
                        .enumerate()
                        .all(|(i, &b)| b == 0xFF || i == at)
                );
            }
        }
    }

    #[test]
    fn alignment_and_bounds_are_enforced() {
        let mut f = Sim::uniform(2);
        assert_eq!(f.write(2, &[0; 4]), Err(SimError::NotAligned));
        assert_eq!(f.write(0, &[0; 3]), Err(SimError::NotAligned));
        assert_eq!(f.write(508, &[0; 8]), Err(SimError::OutOfBounds));
        assert_eq!(f.erase(0, 128), Err(SimError::NotAligned));
        assert_eq!(f.erase(0, 768), Err(SimError::OutOfBounds));
        assert_eq!(
            f.kind_of(SimError::NotAligned),
            NorFlashErrorKind::NotAligned
        );
    }

    #[test]
    fn non_uniform_sectors_erase_only_whole_sectors() {
        let mut f = Sim::with_sectors(&[256, 256, 1024]);
        assert_eq!(f.erase(512, 768), Err(SimError::NotAligned));
        f.erase(512, 1536).unwrap();
        f.erase(0, 512).unwrap();
    }

    #[test]
    fn power_cut_stops_everything_until_power_cycle() {
        let mut f = Sim::uniform(2);
        f.arm(Fault {
            mode: FaultMode::PowerCut,
            at: 1,
        });
        f.write(0, &[0; 4]).unwrap();
        assert_eq!(f.write(4, &[0; 4]), Err(SimError::PowerLost));
        assert_eq!(f.bytes()[4], 0xFF);
        let mut b = [0; 1];
        assert_eq!(f.read(0, &mut b), Err(SimError::PowerLost));
        f.power_cycle();
        f.write(4, &[0; 4]).unwrap();
    }

    #[test]
    fn torn_write_programs_a_strict_prefix() {
        for at in 0..20 {
            let mut f = Sim::uniform(1);
            f.ops = at;
            f.arm(Fault {
                mode: FaultMode::TornWrite,
                at,
            });
            assert_eq!(f.write(0, &[0u8; 64]), Err(SimError::PowerLost));
            let programmed = f.bytes()[..64].iter().take_while(|&&b| b == 0).count();
            assert!(programmed < 64);
            assert!(f.bytes()[programmed + 1..].iter().all(|&b| b == 0xFF));
        }
    }

    #[test]
    fn partial_erase_leaves_old_bytes() {
        let mut f = Sim::uniform(1);
        f.write(0, &[0u8; 256]).unwrap();
        f.arm(Fault {
            mode: FaultMode::PartialErase,
            at: 1,
        });
        assert_eq!(f.erase(0, 256), Err(SimError::PowerLost));
        let old = f.bytes().iter().filter(|&&b| b == 0).count();
        assert!(old > 0 && old < 256, "{old}");
    }

    impl Sim {
        fn kind_of(&self, e: SimError) -> NorFlashErrorKind {
            e.kind()
        }
    }
}
