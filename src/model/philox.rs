//! Philox4x32-10 counter-based random bits: the CPU twin of `kernels/philox.cuh`, so dropout
//! masks are the same bits on every device and need never be stored or uploaded.

/// One Philox4x32-10 block (Salmon et al. 2011): ten rounds over the counter `c` with key `k`.
pub fn philox4x32_10(mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    for _ in 0..10 {
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The block of stream `stream` under `seed` that holds elements 4·block … 4·block + 3.
fn block(seed: u64, stream: u32, block: u64) -> [u32; 4] {
    philox4x32_10(
        [block as u32, (block >> 32) as u32, stream, 0],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// The 32 bits of element `e` of stream `stream` under `seed` (`noiseda_philox_bits`).
pub fn bits(seed: u64, stream: u32, e: u64) -> u32 {
    block(seed, stream, e >> 2)[(e & 3) as usize]
}

/// The 16 bits of element `e` of stream `stream` under `seed` (`noiseda_philox_half`): word
/// e / 2, its low half for even e, its high half for odd e — eight values per block, for
/// draws (dropout) where 2⁻¹⁶ resolution is plenty.
pub fn half(seed: u64, stream: u32, e: u64) -> u16 {
    (bits(seed, stream, e >> 1) >> (16 * (e & 1))) as u16
}

/// [`half`] of elements `0..n`.
pub fn fill_halves(seed: u64, stream: u32, n: usize) -> Vec<u16> {
    let mut out: Vec<u16> = fill(seed, stream, n.div_ceil(2))
        .into_iter()
        .flat_map(|w| [w as u16, (w >> 16) as u16])
        .collect();
    out.truncate(n);
    out
}

/// Bits of elements `0..n` of stream `stream` under `seed`, four per block.
pub fn fill(seed: u64, stream: u32, n: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(n.div_ceil(4) * 4);
    for b in 0..n.div_ceil(4) {
        out.extend_from_slice(&block(seed, stream, b as u64));
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's published known-answer vectors (its `tests/kat_vectors`).
    #[test]
    fn matches_the_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn fill_is_bits_element_by_element_and_streams_differ() {
        let v = fill(7, 3, 70);
        assert_eq!(v.len(), 70);
        for (e, &b) in v.iter().enumerate() {
            assert_eq!(b, bits(7, 3, e as u64));
        }
        assert_ne!(v, fill(7, 4, 70));
        assert_ne!(v, fill(8, 3, 70));
        assert_eq!(fill(7, 3, 5), v[..5]);
        let h = fill_halves(7, 3, 21);
        for (e, &b) in h.iter().enumerate() {
            assert_eq!(b, half(7, 3, e as u64));
        }
        assert_eq!((h[0], h[1]), (v[0] as u16, (v[0] >> 16) as u16));
        // Uniform enough for dropout: the mean of many draws is near 2³¹.
        let n = 100_000;
        let mean = fill(1, 0, n).iter().map(|&b| b as f64).sum::<f64>() / n as f64;
        assert!((mean / 2f64.powi(31) - 1.0).abs() < 0.01, "{mean}");
    }
}
