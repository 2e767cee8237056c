//! A fused u8 × i8 matrix product with requantization, for quantized dense layers and
//! convolutions on CPUs with int8 dot-product instructions (AVX-512 VNNI).
//!
//! rten-gemm's int8 path packs every input block, writes i32 products to memory and leaves
//! requantization to a second pass; on the small depths and widths of mobile networks
//! (1x1 convolutions of 16 to 96 channels) those passes cost more than the products. Here
//! each output tile (4 rows × up to 64 channels) is summed in registers straight from the
//! input rows and requantized before it is stored, XNNPACK's "c4" layout: weights packed
//! once as, per block of 16 output channels, groups of 4 depth steps (one i32 lane per
//! channel holding its 4 weights), so `vpdpbusd` adds 64 products per instruction.
//!
//! Written with `core::arch` intrinsics because rten-simd has no int8 dot product; CPUs
//! without VNNI (and other architectures) keep the rten-gemm path. Results are bit-identical
//! to that path: the same i32 sums and the same f32 requantization, rounding half to even.
//!
//! The `vnni` module is the workspace's one `unsafe` code (intrinsics need the CPU feature,
//! unaligned loads and masked stores take raw pointers). Its invariants: `run` checks every
//! slice length before entering it, tiles are clipped to the rows and channels, and the
//! feature check guards the call. `fused_products_equal_the_plain_sum` checks it against a
//! plain sum; the LiteRT comparisons check every int8 model through it.

/// An 8-bit output code type (i8 or u8).
pub trait Code: Copy + Send + Sync + 'static {
    const SIGNED: bool;
}

impl Code for i8 {
    const SIGNED: bool = true;
}

impl Code for u8 {
    const SIGNED: bool = false;
}

/// Output channels per packed block (one 512-bit vector of i32).
const BLOCK: usize = 16;

/// Weights `[k, n]` packed for [`QPacked::run`].
pub struct QPacked {
    k: usize,
    n: usize,
    /// Depth in groups of 4.
    // Read only by the x86_64 kernel; elsewhere `available()` is false and nothing runs.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    groups: usize,
    blocks: usize,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    data: Vec<i8>,
}

/// Requantization of one product: `clamp(round((acc + bias[c]) * multiplier[c]) + zero)`.
/// `bias` and `multipliers` are padded to a whole number of blocks ([`QPacked::padded`]).
pub struct Requant<'a> {
    pub bias: &'a [i32],
    pub multipliers: &'a [f32],
    pub zero: i32,
    pub lo: i32,
    pub hi: i32,
}

impl QPacked {
    /// Whether this CPU runs the fused kernel.
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Packs `w[i * row_stride + j * col_stride]` for `i < k`, `j < n`.
    pub fn pack(
        w: &[i8],
        k: usize,
        n: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<QPacked, String> {
        let groups = k.div_ceil(4);
        let blocks = n.div_ceil(BLOCK);
        let last = (k.max(1) - 1) * row_stride + (n.max(1) - 1) * col_stride;
        if k == 0 || n == 0 || last >= w.len() {
            return Err("weights do not fit their shape".into());
        }
        let mut data = vec![0i8; blocks * groups * BLOCK * 4];
        for b in 0..blocks {
            for g in 0..groups {
                let tile = &mut data[(b * groups + g) * BLOCK * 4..][..BLOCK * 4];
                for lane in 0..BLOCK {
                    let j = b * BLOCK + lane;
                    if j >= n {
                        continue;
                    }
                    for d in 0..4 {
                        let i = g * 4 + d;
                        if i < k {
                            tile[lane * 4 + d] = w[i * row_stride + j * col_stride];
                        }
                    }
                }
            }
        }
        Ok(QPacked {
            k,
            n,
            groups,
            blocks,
            data,
        })
    }

    /// `v` padded with zeros to a whole number of blocks.
    pub fn padded<T: Copy + Default>(&self, v: &[T]) -> Vec<T> {
        let mut out = v.to_vec();
        out.resize(self.blocks * BLOCK, T::default());
        out
    }

    /// `out[r, c] = requant(Σ_i a[r * a_stride + i] · w[i, c])` for `r < m`; `out` is
    /// `[m, n]` of 8-bit codes.
    pub fn run<T: Code>(
        &self,
        a: &[u8],
        m: usize,
        a_stride: usize,
        epi: &Requant<'_>,
        out: &mut [T],
    ) -> Result<(), String> {
        if m == 0 {
            return Ok(());
        }
        if a_stride < self.k || a.len() < (m - 1) * a_stride + self.k || out.len() < m * self.n {
            return Err("fused int8 product given too little input or output".into());
        }
        let width = self.blocks * BLOCK;
        if epi.bias.len() < width || epi.multipliers.len() < width {
            return Err("fused int8 product given unpadded requantization".into());
        }
        #[cfg(target_arch = "x86_64")]
        if Self::available() {
            vnni::run(self, a, m, a_stride, epi, out);
            return Ok(());
        }
        Err("the fused int8 product needs AVX-512 VNNI".into())
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni {
    use std::arch::x86_64::*;

    use super::{BLOCK, Code, QPacked, Requant};

    /// Entry from safe code: the caller checked the features and the slice lengths.
    pub(super) fn run<T: Code>(
        p: &QPacked,
        a: &[u8],
        m: usize,
        a_stride: usize,
        epi: &Requant<'_>,
        out: &mut [T],
    ) {
        // Safety: T is i8 or u8 (sealed by `Code`'s two impls): one byte, any bit pattern.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), out.len()) };
        // Safety: `QPacked::run` checked the CPU features and every length this reads
        // and writes.
        unsafe { run_tiles(p, a, m, a_stride, epi, bytes, T::SIGNED) }
    }

    /// The last, partial group of depth steps of a row (`left` < 4 of them), zero padded.
    #[inline(always)]
    fn tail(a: &[u8], at: usize, left: usize) -> i32 {
        let mut b = [0u8; 4];
        for (d, v) in b.iter_mut().enumerate().take(left) {
            *v = a.get(at + d).copied().unwrap_or(0);
        }
        i32::from_le_bytes(b)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn run_tiles(
        p: &QPacked,
        a: &[u8],
        m: usize,
        a_stride: usize,
        epi: &Requant<'_>,
        out: &mut [u8],
        signed: bool,
    ) {
        let mut r0 = 0;
        // Narrow outputs (one or two blocks): eight rows a tile, so each weight load feeds
        // more products.
        if p.blocks <= 2 {
            while r0 + 8 <= m {
                // Safety: as `run`'s.
                unsafe {
                    if p.blocks == 1 {
                        tile::<8, 1>(p, a, r0, 0, a_stride, epi, out, signed);
                    } else {
                        tile::<8, 2>(p, a, r0, 0, a_stride, epi, out, signed);
                    }
                }
                r0 += 8;
            }
        }
        while r0 < m {
            let rows = (m - r0).min(4);
            let mut b0 = 0;
            while b0 < p.blocks {
                let nb = (p.blocks - b0).min(4);
                // Safety: as `run`'s.
                unsafe {
                    match (rows, nb) {
                        (4, 4) => tile::<4, 4>(p, a, r0, b0, a_stride, epi, out, signed),
                        (4, 3) => tile::<4, 3>(p, a, r0, b0, a_stride, epi, out, signed),
                        (4, 2) => tile::<4, 2>(p, a, r0, b0, a_stride, epi, out, signed),
                        (4, _) => tile::<4, 1>(p, a, r0, b0, a_stride, epi, out, signed),
                        (3, 4) => tile::<3, 4>(p, a, r0, b0, a_stride, epi, out, signed),
                        (3, 3) => tile::<3, 3>(p, a, r0, b0, a_stride, epi, out, signed),
                        (3, 2) => tile::<3, 2>(p, a, r0, b0, a_stride, epi, out, signed),
                        (3, _) => tile::<3, 1>(p, a, r0, b0, a_stride, epi, out, signed),
                        (2, 4) => tile::<2, 4>(p, a, r0, b0, a_stride, epi, out, signed),
                        (2, 3) => tile::<2, 3>(p, a, r0, b0, a_stride, epi, out, signed),
                        (2, 2) => tile::<2, 2>(p, a, r0, b0, a_stride, epi, out, signed),
                        (2, _) => tile::<2, 1>(p, a, r0, b0, a_stride, epi, out, signed),
                        (_, 4) => tile::<1, 4>(p, a, r0, b0, a_stride, epi, out, signed),
                        (_, 3) => tile::<1, 3>(p, a, r0, b0, a_stride, epi, out, signed),
                        (_, 2) => tile::<1, 2>(p, a, r0, b0, a_stride, epi, out, signed),
                        (_, _) => tile::<1, 1>(p, a, r0, b0, a_stride, epi, out, signed),
                    }
                }
                b0 += nb;
            }
            r0 += rows;
        }
    }

    /// One tile: rows `r0..r0 + R`, channel blocks `b0..b0 + B`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn tile<const R: usize, const B: usize>(
        p: &QPacked,
        a: &[u8],
        r0: usize,
        b0: usize,
        a_stride: usize,
        epi: &Requant<'_>,
        out: &mut [u8],
        signed: bool,
    ) {
        let mut acc = [[_mm512_setzero_si512(); B]; R];
        let row_start: [usize; R] = std::array::from_fn(|r| (r0 + r) * a_stride);
        let full = p.k / 4;
        let weights = |g: usize| -> [__m512i; B] {
            std::array::from_fn(|b| {
                let at = ((b0 + b) * p.groups + g) * BLOCK * 4;
                // Safety: `at + 64 <= data.len()` (blocks and groups bound the packing).
                unsafe { _mm512_loadu_si512(p.data.as_ptr().add(at) as *const _) }
            })
        };
        for g in 0..full {
            let w = weights(g);
            for r in 0..R {
                // Safety: `row_start[r] + g * 4 + 4 <= row_start[r] + k <= a.len()` (run
                // checked the last row's end).
                let q = unsafe {
                    (a.as_ptr().add(row_start[r] + g * 4) as *const i32).read_unaligned()
                };
                let av = _mm512_set1_epi32(q);
                for b in 0..B {
                    acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], av, w[b]);
                }
            }
        }
        if full < p.groups {
            let w = weights(full);
            for r in 0..R {
                let av = _mm512_set1_epi32(tail(a, row_start[r] + full * 4, p.k - full * 4));
                for b in 0..B {
                    acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], av, w[b]);
                }
            }
        }
        let zero = _mm512_set1_epi32(epi.zero);
        let lo = _mm512_set1_ps((epi.lo - epi.zero) as f32);
        let hi = _mm512_set1_ps((epi.hi - epi.zero) as f32);
        for b in 0..B {
            let c0 = (b0 + b) * BLOCK;
            // Safety: bias and multipliers are padded to whole blocks (checked by run).
            let (bias, mult) = unsafe {
                (
                    _mm512_loadu_si512(epi.bias.as_ptr().add(c0) as *const _),
                    _mm512_loadu_ps(epi.multipliers.as_ptr().add(c0)),
                )
            };
            let valid = (p.n - c0).min(BLOCK);
            let mask: __mmask16 = if valid == BLOCK {
                0xffff
            } else {
                (1u16 << valid) - 1
            };
            for r in 0..R {
                let sum = _mm512_add_epi32(acc[r][b], bias);
                let f = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), mult);
                let f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(f), zero);
                let bytes = if signed {
                    _mm512_cvtsepi32_epi8(q)
                } else {
                    _mm512_cvtusepi32_epi8(q)
                };
                let at = (r0 + r) * p.n + c0;
                // Safety: `at + valid <= out.len()` (m * n checked by run); the mask stores
                // only the valid channels.
                unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(at) as *mut _, mask, bytes) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain sum and requantization.
    fn reference(
        a: &[u8],
        m: usize,
        k: usize,
        w: &[i8],
        n: usize,
        epi: &Requant<'_>,
        signed: bool,
    ) -> Vec<u8> {
        let mut out = vec![0u8; m * n];
        for r in 0..m {
            for c in 0..n {
                let acc: i32 = (0..k)
                    .map(|i| i32::from(a[r * k + i]) * i32::from(w[i * n + c]))
                    .sum();
                let v = ((acc.wrapping_add(epi.bias[c])) as f32 * epi.multipliers[c])
                    .max((epi.lo - epi.zero) as f32)
                    .min((epi.hi - epi.zero) as f32);
                let q = v.round_ties_even() as i32 + epi.zero;
                out[r * n + c] = if signed { q as i8 as u8 } else { q as u8 };
            }
        }
        out
    }

    #[test]
    fn fused_products_equal_the_plain_sum() {
        if !QPacked::available() {
            return;
        }
        let mut rng = aq_test_support::XorShift::new(7);
        let mut next = move || rng.next_u64() as u32;
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 17),
            (9, 16, 16),
            (13, 27, 70),
            (4, 64, 64),
            (7, 129, 33),
        ] {
            let a: Vec<u8> = (0..m * k).map(|_| next() as u8).collect();
            let w: Vec<i8> = (0..k * n).map(|_| next() as i8).collect();
            let packed = QPacked::pack(&w, k, n, n, 1).unwrap();
            let bias: Vec<i32> = (0..n).map(|_| (next() % 20000) as i32 - 10000).collect();
            let mult: Vec<f32> = (0..n).map(|_| (next() % 1000) as f32 / 400000.0).collect();
            for signed in [true, false] {
                let (zero, lo, hi) = if signed {
                    (-3, -128, 127)
                } else {
                    (120, 0, 255)
                };
                let (bp, mp) = (packed.padded(&bias), packed.padded(&mult));
                let epi = Requant {
                    bias: &bp,
                    multipliers: &mp,
                    zero,
                    lo,
                    hi,
                };
                let out: Vec<u8> = if signed {
                    let mut o = vec![0i8; m * n];
                    packed.run(&a, m, k, &epi, &mut o).unwrap();
                    o.iter().map(|v| *v as u8).collect()
                } else {
                    let mut o = vec![0u8; m * n];
                    packed.run(&a, m, k, &epi, &mut o).unwrap();
                    o
                };
                let plain = Requant {
                    bias: &bias,
                    multipliers: &mult,
                    zero,
                    lo,
                    hi,
                };
                assert_eq!(
                    out,
                    reference(&a, m, k, &w, n, &plain, signed),
                    "m {m} k {k} n {n}"
                );
            }
        }
    }
}
