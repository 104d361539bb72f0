//! The device's TrustRoot on flash: two copies at the end of the state
//! partition; the state record names the current one (copy, version, length,
//! digest). An update writes the copy the state does *not* name, reads it
//! back, and only then appends the record that switches to it, so a power
//! cut at any flash operation leaves the old root or the new one.

use alloc::vec;

use aloft_protocol::envelope::decode_envelope;
use aloft_protocol::trust::VerifiedTrustRoot;
use embedded_storage::nor_flash::NorFlash;

use crate::layout::Layout;
use crate::state::TrustRef;
use crate::{Error, flash};

/// Erases TrustRoot copy `copy` and writes `envelope` (its encoding) there:
/// a 4-byte little-endian length, then the bytes; then reads it back.
pub(crate) fn write_copy<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    copy: u8,
    envelope: &[u8],
) -> Result<(), Error> {
    let room = layout.trust_len() as usize;
    if envelope.len() + 4 > room {
        return Err(Error::TrustRootTooLarge {
            len: envelope.len(),
            room: room - 4,
        });
    }
    let at = layout.trust_offset(copy);
    flash
        .erase(at, at + layout.trust_len())
        .map_err(Error::flash)?;
    let mut buf = vec![0xFFu8; 4 + envelope.len()];
    buf[..4].copy_from_slice(&(envelope.len() as u32).to_le_bytes());
    buf[4..].copy_from_slice(envelope);
    flash::write_padded(flash, at, &buf)?;
    if !flash::equals(flash, at, &buf)? {
        return Err(Error::Flash(
            embedded_storage::nor_flash::NorFlashErrorKind::Other,
        ));
    }
    Ok(())
}

/// Reads the copy `r` names and checks it is exactly the root recorded:
/// length, decodable envelope, its own root threshold, version and digest.
/// `Ok(None)` when it does not verify (the device still boots; see
/// [`crate::Device::trust_root`]); flash errors are `Err`.
pub(crate) fn read_copy<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    r: &TrustRef,
) -> Result<Option<VerifiedTrustRoot>, Error> {
    let at = layout.trust_offset(r.copy);
    let mut len = [0u8; 4];
    flash::read(flash, at, &mut len)?;
    let len = u32::from_le_bytes(len);
    if len != r.len || len as usize + 4 > layout.trust_len() as usize {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    flash::read(flash, at + 4, &mut buf)?;
    let root = decode_envelope(&buf)
        .and_then(|env| VerifiedTrustRoot::reload_stored(&env))
        .ok()
        .filter(|root| root.version() == r.version && root.digest() == r.digest);
    Ok(root)
}
