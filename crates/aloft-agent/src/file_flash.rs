//! [`FileFlash`]: a NOR flash kept in a file, so a device's slots and state
//! survive process restarts.
//!
//! The rules are those of real NOR parts (and of aloft-device's simulator):
//! erase works on whole sectors and sets them to `0xFF`; a program operation
//! must be aligned to `WRITE_SIZE` in offset and length and may only target
//! erased bytes (programming over a byte that is not `0xFF` is refused, so a
//! bug that relies on overwriting is found on the host and not on a device);
//! every access is bounds-checked. With [`Durability::Sync`] each erase and
//! program is followed by `fdatasync`, so what a call returned survives a
//! crash of the process or the machine.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a flash file could not be opened or an operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileFlashError {
    /// The file could not be created, read or written.
    #[error("flash file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file (or the requested size) is not a whole number of sectors.
    #[error("flash file {path}: size {len} is not a positive multiple of the {sector}-byte sector")]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
        /// The sector size.
        sector: usize,
    },
    /// `create` was asked to make a flash file that already exists.
    #[error("flash file {0} already exists (open it instead)")]
    Exists(PathBuf),
    /// An access past the end of the flash.
    #[error("flash access {offset:#x}+{len} is out of bounds (capacity {capacity:#x})")]
    OutOfBounds {
        /// Start of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Flash capacity.
        capacity: usize,
    },
    /// An erase not on sector boundaries, or a program not on write-word
    /// boundaries (offset or length).
    #[error("flash {op} at {offset:#x}+{len} is not aligned to {align} bytes")]
    NotAligned {
        /// "erase" or "program".
        op: &'static str,
        /// Start of the access.
        offset: u32,
        /// Length of the access.
        len: usize,
        /// The required alignment.
        align: usize,
    },
    /// A program operation targets a byte that is not erased.
    #[error("flash program over a non-erased byte at {0:#x} (erase the sector first)")]
    NotErased(u32),
}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned { .. } => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// Whether each erase and program is synced to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` after every erase and program: survives a machine crash.
    #[default]
    Sync,
    /// Leave writes to the page cache: survives a process crash (kill -9)
    /// but not a machine crash. Faster; for tests and simulations.
    Buffered,
}

/// A NOR flash of `capacity` bytes backed by a file. `W` is the write
/// (program) granularity, `E` the sector (erase) size; the defaults, 4 and
/// 4096, match common SPI NOR parts.
#[derive(Debug)]
pub struct FileFlash<const W: usize = 4, const E: usize = 4096> {
    file: File,
    path: PathBuf,
    capacity: usize,
    durability: Durability,
}

impl<const W: usize, const E: usize> FileFlash<W, E> {
    /// Creates a new flash file of `capacity` bytes, all erased (`0xFF`).
    /// Refuses an existing file ([`FileFlashError::Exists`]) and a capacity
    /// that is not a positive multiple of `E`.
    pub fn create(
        path: impl AsRef<Path>,
        capacity: usize,
        durability: Durability,
    ) -> Result<Self, FileFlashError> {
        let path = path.as_ref().to_owned();
        check_size::<E>(&path, capacity as u64)?;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(FileFlashError::Exists(path));
            }
            Err(source) => return Err(FileFlashError::Io { path, source }),
        };
        let mut flash = Self {
            file,
            path,
            capacity,
            durability,
        };
        let erased = vec![0xFF; E];
        for sector in 0..capacity / E {
            flash.pwrite((sector * E) as u64, &erased)?;
        }
        flash.sync()?;
        Ok(flash)
    }

    /// Opens an existing flash file; its size is the capacity.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, FileFlashError> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| FileFlashError::Io {
                path: path.clone(),
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| FileFlashError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        check_size::<E>(&path, len)?;
        Ok(Self {
            file,
            path,
            capacity: len as usize,
            durability,
        })
    }

    /// Opens `path` if it exists, else creates it with `capacity` bytes.
    pub fn open_or_create(
        path: impl AsRef<Path>,
        capacity: usize,
        durability: Durability,
    ) -> Result<Self, FileFlashError> {
        if path.as_ref().exists() {
            Self::open(path, durability)
        } else {
            Self::create(path, capacity, durability)
        }
    }

    /// The backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> FileFlashError {
        FileFlashError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn pwrite(&mut self, at: u64, bytes: &[u8]) -> Result<(), FileFlashError> {
        self.file.write_all_at(bytes, at).map_err(|e| self.io(e))
    }

    fn sync(&mut self) -> Result<(), FileFlashError> {
        match self.durability {
            Durability::Sync => self.file.sync_data().map_err(|e| self.io(e)),
            Durability::Buffered => Ok(()),
        }
    }

    fn bounds(&self, offset: u64, len: u64) -> Result<(), FileFlashError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity as u64 => Ok(()),
            _ => Err(FileFlashError::OutOfBounds {
                offset,
                len,
                capacity: self.capacity,
            }),
        }
    }
}

fn check_size<const E: usize>(path: &Path, len: u64) -> Result<(), FileFlashError> {
    if E == 0 || len == 0 || !len.is_multiple_of(E as u64) || len > u64::from(u32::MAX) + 1 {
        return Err(FileFlashError::BadSize {
            path: path.to_owned(),
            len,
            sector: E,
        });
    }
    Ok(())
}

/// Uniform sectors of `E` bytes.
impl<const W: usize, const E: usize> aloft_device::EraseSectors for FileFlash<W, E> {
    fn sector_at(&self, offset: u32) -> Option<(u32, u32)> {
        aloft_device::uniform_sector_at(E, ReadNorFlash::capacity(self), offset)
    }
}

impl<const W: usize, const E: usize> ErrorType for FileFlash<W, E> {
    type Error = FileFlashError;
}

impl<const W: usize, const E: usize> ReadNorFlash for FileFlash<W, E> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FileFlashError> {
        self.bounds(offset.into(), bytes.len() as u64)?;
        self.file
            .read_exact_at(bytes, offset.into())
            .map_err(|e| self.io(e))
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

impl<const W: usize, const E: usize> NorFlash for FileFlash<W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FileFlashError> {
        if from > to {
            return Err(FileFlashError::OutOfBounds {
                offset: from.into(),
                len: 0,
                capacity: self.capacity,
            });
        }
        self.bounds(from.into(), u64::from(to - from))?;
        if !(from as usize).is_multiple_of(E) || !(to as usize).is_multiple_of(E) {
            return Err(FileFlashError::NotAligned {
                op: "erase",
                offset: from,
                len: (to - from) as usize,
                align: E,
            });
        }
        let erased = vec![0xFF; E];
        let mut at = from;
        while at < to {
            self.pwrite(at.into(), &erased)?;
            at += E as u32;
        }
        self.sync()
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FileFlashError> {
        self.bounds(offset.into(), bytes.len() as u64)?;
        if !(offset as usize).is_multiple_of(W) || !bytes.len().is_multiple_of(W) {
            return Err(FileFlashError::NotAligned {
                op: "program",
                offset,
                len: bytes.len(),
                align: W,
            });
        }
        let mut current = vec![0u8; bytes.len()];
        self.file
            .read_exact_at(&mut current, offset.into())
            .map_err(|e| self.io(e))?;
        if let Some(i) = current.iter().position(|&b| b != 0xFF) {
            return Err(FileFlashError::NotErased(offset + i as u32));
        }
        // Programming clears bits only: over erased bytes that is the data.
        for (c, b) in current.iter_mut().zip(bytes) {
            *c &= *b;
        }
        self.pwrite(offset.into(), &current)?;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flash = FileFlash<4, 4096>;

    fn flash(dir: &tempfile::TempDir) -> Flash {
        Flash::create(dir.path().join("flash.bin"), 4 * 4096, Durability::Buffered).unwrap()
    }

    #[test]
    fn created_erased_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flash(&dir);
        let mut buf = [0u8; 16];
        f.read(4096, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 16]);
        f.write(8, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        drop(f);
        let mut f = Flash::open(dir.path().join("flash.bin"), Durability::Sync).unwrap();
        assert_eq!(f.capacity(), 4 * 4096);
        f.read(8, &mut buf[..8]).unwrap();
        assert_eq!(&buf[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        f.erase(0, 4096).unwrap();
        f.read(8, &mut buf[..8]).unwrap();
        assert_eq!(&buf[..8], &[0xFF; 8]);
    }

    #[test]
    fn create_refuses_existing_file_and_bad_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let _f = flash(&dir);
        let again = Flash::create(dir.path().join("flash.bin"), 4096, Durability::Buffered);
        assert!(matches!(again, Err(FileFlashError::Exists(_))));
        for size in [0, 100, 4096 + 4] {
            let r = Flash::create(
                dir.path().join(format!("f{size}")),
                size,
                Durability::Buffered,
            );
            assert!(matches!(r, Err(FileFlashError::BadSize { .. })), "{size}");
        }
        std::fs::write(dir.path().join("odd"), [0u8; 10]).unwrap();
        let r = Flash::open(dir.path().join("odd"), Durability::Buffered);
        assert!(matches!(r, Err(FileFlashError::BadSize { len: 10, .. })));
        let r = Flash::open(dir.path().join("missing"), Durability::Buffered);
        assert!(matches!(r, Err(FileFlashError::Io { .. })));
    }

    #[test]
    fn program_over_non_erased_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flash(&dir);
        f.write(0, &[0xF0; 4]).unwrap();
        // Even a value that only clears further bits is refused: the byte
        // is not erased.
        let e = f.write(0, &[0x00; 4]).unwrap_err();
        assert!(matches!(e, FileFlashError::NotErased(0)));
        let e = f.write(0, &[0xF0; 8]).unwrap_err();
        assert!(matches!(e, FileFlashError::NotErased(0)));
        // Bytes 4.. are still erased; a partly written word names its first
        // programmed byte.
        f.write(4, &[0xFF, 0xFF, 0x12, 0xFF]).unwrap();
        let e = f.write(4, &[0; 4]).unwrap_err();
        assert!(matches!(e, FileFlashError::NotErased(6)));
        let mut buf = [0u8; 8];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xF0, 0xF0, 0xF0, 0xF0, 0xFF, 0xFF, 0x12, 0xFF]);
        assert_eq!(e.kind(), NorFlashErrorKind::Other);
    }

    #[test]
    fn program_alignment_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flash(&dir);
        for (offset, len) in [(1, 4), (2, 4), (0, 3), (0, 5)] {
            let e = f.write(offset, &vec![0u8; len]).unwrap_err();
            assert!(matches!(
                e,
                FileFlashError::NotAligned { op: "program", .. }
            ));
            assert_eq!(e.kind(), NorFlashErrorKind::NotAligned);
        }
        let mut buf = [0u8; 8];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 8], "a refused program writes nothing");
    }

    #[test]
    fn erase_alignment_and_bounds_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flash(&dir);
        f.write(0, &[0; 4]).unwrap();
        for (from, to) in [(1, 4096), (0, 4095), (4096, 4096 + 512)] {
            let e = f.erase(from, to).unwrap_err();
            assert!(matches!(e, FileFlashError::NotAligned { op: "erase", .. }));
        }
        let e = f.erase(4096, 0).unwrap_err();
        assert_eq!(e.kind(), NorFlashErrorKind::OutOfBounds);
        let e = f.erase(0, 5 * 4096).unwrap_err();
        assert_eq!(e.kind(), NorFlashErrorKind::OutOfBounds);
        let mut buf = [0u8; 4];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0; 4], "a refused erase erases nothing");
    }

    #[test]
    fn reads_and_writes_past_the_end_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flash(&dir);
        let mut buf = [0u8; 8];
        let e = f.read(4 * 4096 - 4, &mut buf).unwrap_err();
        assert!(matches!(e, FileFlashError::OutOfBounds { .. }));
        let e = f.write(4 * 4096 - 4, &[0; 8]).unwrap_err();
        assert_eq!(e.kind(), NorFlashErrorKind::OutOfBounds);
        let e = f.read(u32::MAX, &mut buf).unwrap_err();
        assert_eq!(e.kind(), NorFlashErrorKind::OutOfBounds);
    }
}
