//! The Internet checksum (RFC 1071) over headers the data path builds itself: a sum of 16-bit
//! big-endian words, folded, complemented. Fixed-size regions only, so every loop has a
//! constant bound and every index is checked once, with the region.

/// Adds the 16-bit words of `f[from..from + len]` (`len` even) to `sum`. The bytes are read
/// from the frame again (volatile), not kept from when they were written: kept, they would
/// spill to the stack, which has no room for them.
#[inline(always)]
pub fn add_words<const N: usize>(f: &[u8; N], from: usize, len: usize, mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < len && from + i + 1 < N {
        // SAFETY: both indices are within `f` (checked by the loop condition).
        let (hi, lo) = unsafe {
            (
                core::ptr::read_volatile(&f[from + i]),
                core::ptr::read_volatile(&f[from + i + 1]),
            )
        };
        sum += u16::from_be_bytes([hi, lo]) as u32;
        i += 2;
    }
    sum
}

/// The checksum field's value for a `sum` of everything it covers (the field itself as 0).
#[inline(always)]
pub fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Writes the checksum of `f[from..from + len]` (its field at `from + at`, zero before) there.
#[inline(always)]
pub fn write<const N: usize>(f: &mut [u8; N], from: usize, len: usize, at: usize, seed: u32) {
    let c = finish(add_words(f, from, len, seed)).to_be_bytes();
    f[from + at] = c[0];
    f[from + at + 1] = c[1];
}
