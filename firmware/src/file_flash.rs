//! A NOR flash kept in a file: the file holds the raw flash bytes; erase sets
//! a sector to `0xFF`, programming can only clear bits (writing a 1 over a 0
//! is refused, as on real NOR). Every write is followed by `fdatasync`, so
//! what a call returned survives a crash of the process.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use crate::board::SECTOR;

/// Why a flash operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileFlashError {
    /// The file could not be read or written.
    #[error("flash file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// An access beyond the end of the flash.
    #[error("flash access out of bounds")]
    OutOfBounds,
    /// An erase not aligned to sectors.
    #[error("flash erase not aligned to sectors")]
    NotAligned,
    /// Programming would set a bit that is 0 (erase first).
    #[error("flash program would set a cleared bit at {0:#x}")]
    NotErased(u32),
}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::Io(_) | Self::NotErased(_) => NorFlashErrorKind::Other,
        }
    }
}

/// A NOR flash backed by a file.
#[derive(Debug)]
pub struct FileFlash {
    file: File,
    len: u64,
}

impl FileFlash {
    /// Creates a new flash file of `len` bytes, all erased (`0xFF`); refuses
    /// to overwrite an existing file.
    pub fn create(path: &Path, len: u64) -> Result<Self, FileFlashError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let block = vec![0xFF_u8; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(block.len() as u64) as usize;
            file.write_all_at(&block[..n], at)?;
            at += n as u64;
        }
        file.sync_all()?;
        Ok(Self { file, len })
    }

    /// Opens an existing flash file.
    pub fn open(path: &Path) -> Result<Self, FileFlashError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }

    /// Flash size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length flash.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: u32, len: usize) -> Result<(), FileFlashError> {
        if u64::from(offset) + len as u64 > self.len {
            Err(FileFlashError::OutOfBounds)
        } else {
            Ok(())
        }
    }
}

impl ErrorType for FileFlash {
    type Error = FileFlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len())?;
        self.file.read_exact_at(bytes, offset.into())?;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = SECTOR as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from > to || from % SECTOR != 0 || to % SECTOR != 0 {
            return Err(FileFlashError::NotAligned);
        }
        self.check(from, (to - from) as usize)?;
        let block = vec![0xFF_u8; (to - from) as usize];
        self.file.write_all_at(&block, from.into())?;
        self.file.sync_data()?;
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len())?;
        let mut old = vec![0u8; bytes.len()];
        self.file.read_exact_at(&mut old, offset.into())?;
        if let Some(i) = old.iter().zip(bytes).position(|(o, n)| n & !o != 0) {
            return Err(FileFlashError::NotErased(offset + i as u32));
        }
        self.file.write_all_at(bytes, offset.into())?;
        self.file.sync_data()?;
        Ok(())
    }
}
