//! The snapshot file's frame: a header with a checksum around the payload,
//! and every reason a file is refused.
//!
//! File format (integers little-endian):
//!
//! ```text
//! magic    8 bytes  "KDSNAP\r\n"   (\r\n catches text-mode mangling, as in PNG)
//! version  u32      FORMAT_VERSION
//! length   u64      payload bytes
//! crc32    u32      CRC-32 (IEEE 802.3) of the payload
//! payload  JSON     see super::payload
//! ```
//!
//! Knows bytes only: what the payload means is [`super::payload`]'s.

use std::time::Duration;

use super::coverage::Coverage;

pub(crate) const MAGIC: &[u8; 8] = b"KDSNAP\r\n";
/// Bumped whenever the payload's meaning changes; other versions are ignored.
/// 2: Services carry their type, cluster IPs and external name (a version-1
/// file has none, and the zone would answer NODATA for every ClusterIP
/// Service until the first list); slices record their
/// `service.kubernetes.io/headless` label, which decides which slice
/// watch's re-list replaces them (a version-1 file would file every
/// headless slice under the other watch).
pub(crate) const FORMAT_VERSION: u32 = 2;
pub(crate) const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Larger files are refused unread: no snapshot of a real index is near it,
/// and a corrupt length must not make the agent allocate without bound.
pub(crate) const MAX_FILE_BYTES: u64 = 512 << 20;

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no snapshot file")]
    Missing,
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a kubedisco snapshot (bad magic)")]
    Magic,
    #[error("format version {found}, this agent reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("checksum mismatch (corrupt)")]
    Checksum,
    #[error("unreadable payload: {0}")]
    Payload(String),
    #[error("{0} bytes is larger than the {MAX_FILE_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("taken with {found:?}, but the agent watches {wanted:?}")]
    Coverage { found: Coverage, wanted: Coverage },
    #[error("its data is {age:?} old, more than --snapshot-max-age {max:?}")]
    TooOld { age: Duration, max: Duration },
}

/// `payload` behind its header.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(HEADER_LEN + payload.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32(payload).to_le_bytes());
    file.extend_from_slice(payload);
    file
}

/// The payload of a whole file, once magic, version, length and checksum
/// are right.
pub(crate) fn unframe(bytes: &[u8]) -> Result<&[u8], LoadError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(if MAGIC.starts_with(bytes) {
            LoadError::Truncated(format!("{} bytes", bytes.len()))
        } else {
            LoadError::Magic
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(LoadError::Truncated(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(LoadError::Version { found: version });
    }
    let length = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let checksum = word(20);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != length {
        return Err(LoadError::Truncated(format!(
            "the header announces {length} payload bytes, the file holds {}",
            payload.len()
        )));
    }
    if crc32(payload) != checksum {
        return Err(LoadError::Checksum);
    }
    Ok(payload)
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and PNG): 20 lines beat a
/// dependency for a checksum read once per start.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in bytes {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
