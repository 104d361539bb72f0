//! Small helpers over `NorFlash`: reads at any offset, padded writes, hashing.

use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::layout::MAX_WRITE_SIZE;

/// Reads `buf.len()` bytes from `offset`, whatever the flash's `READ_SIZE`
/// (unaligned head and tail go through a small bounce buffer).
pub(crate) fn read<F: NorFlash>(flash: &mut F, offset: u32, buf: &mut [u8]) -> Result<(), Error> {
    let r = F::READ_SIZE;
    if r == 1 || ((offset as usize).is_multiple_of(r) && buf.len().is_multiple_of(r)) {
        return flash.read(offset, buf).map_err(Error::flash);
    }
    let mut tmp = [0u8; MAX_WRITE_SIZE];
    let mut done = 0;
    while done < buf.len() {
        let pos = offset as usize + done;
        let skip = pos % r;
        let left = buf.len() - done;
        if skip == 0 && left >= r {
            let n = left / r * r;
            flash
                .read(pos as u32, &mut buf[done..done + n])
                .map_err(Error::flash)?;
            done += n;
            continue;
        }
        flash
            .read((pos - skip) as u32, &mut tmp[..r])
            .map_err(Error::flash)?;
        let n = (r - skip).min(left);
        buf[done..done + n].copy_from_slice(&tmp[skip..skip + n]);
        done += n;
    }
    Ok(())
}

/// SHA-256 of `len` bytes from `offset`, read through a stack buffer.
pub(crate) fn hash<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    len: u64,
) -> Result<aloft_protocol::Digest, Error> {
    let mut h = Sha256::new();
    let mut buf = [0u8; 256];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        read(flash, offset + done as u32, &mut buf[..n])?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(aloft_protocol::Digest::from_bytes(h.finalize().into()))
}

/// Compares `expected.len()` bytes at `offset` with `expected`.
pub(crate) fn equals<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    expected: &[u8],
) -> Result<bool, Error> {
    let mut buf = [0u8; 256];
    for (i, want) in expected.chunks(buf.len()).enumerate() {
        let got = &mut buf[..want.len()];
        read(flash, offset + (i * 256) as u32, got)?;
        if got != want {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes `data` at `offset` (aligned to `WRITE_SIZE`), padding the last word
/// with 0xFF (the erased value) when `data` is not a multiple of it.
pub(crate) fn write_padded<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    data: &[u8],
) -> Result<(), Error> {
    let w = F::WRITE_SIZE;
    let bulk = data.len() / w * w;
    if bulk > 0 {
        flash.write(offset, &data[..bulk]).map_err(Error::flash)?;
    }
    if bulk < data.len() {
        let mut word = [0xFFu8; MAX_WRITE_SIZE];
        word[..data.len() - bulk].copy_from_slice(&data[bulk..]);
        flash
            .write(offset + bulk as u32, &word[..w])
            .map_err(Error::flash)?;
    }
    Ok(())
}
