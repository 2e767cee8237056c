//! Matrix products on rten-gemm: weights packed once at load (f32, and int8 for quantized
//! and hybrid ops), products of two run-time values (MatMul), and the name of the SIMD
//! kernels this CPU runs.

use rten_gemm::{BiasVector, GemmExecutor, GemmInputA, GemmInputB, GemmOptions, PackedBMatrix};
use rten_tensor::NdTensorView;

use super::{BuildCtx, Kernel};
use crate::graph::Op;
use crate::tensor::{View, ViewMut};

thread_local! {
    // rten-gemm's executor is not Send; every thread makes its own (the same CPU picks the
    // same kernel, so matrices packed on one thread run on any other).
    static F32: GemmExecutor<f32> = GemmExecutor::default();
    static I8: GemmExecutor<u8, i8, i32> = GemmExecutor::default();
}

/// The f32 and int8 GEMM kernels in use ("x86_64-f32-avx512 / x86_64-u8i8i32-avx512-vnni").
pub fn isa_name() -> String {
    let f = F32.with(|e| e.kernel_name().to_owned());
    let i = I8.with(|e| e.kernel_name().to_owned());
    format!("{f}, {i}")
}

thread_local! {
    static SPLIT: std::cell::RefCell<(Vec<u8>, Vec<u8>, Vec<i32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Frees this thread's scratch buffers of this module (an idle model gives them back).
pub(crate) fn release_scratch() {
    SPLIT.with(|c| *c.borrow_mut() = (Vec::new(), Vec::new(), Vec::new()));
}

/// Whether the int8 kernel may saturate its 16-bit pair sums (x86 AVX2 without VNNI: u8 x i8
/// pairs can reach 64,770).
pub fn int8_may_saturate() -> bool {
    I8.with(|e| e.may_saturate())
}

/// rten-gemm divides by a packed panel's size, which an empty matrix makes zero (a corrupt
/// model can declare a convolution with no input or output channels): refused before packing.
fn refuse_empty(k: usize, n: usize) -> Result<(), String> {
    if k == 0 || n == 0 {
        return Err(format!("weights of shape [{k}, {n}] are empty"));
    }
    Ok(())
}

/// A `[k, n]` f32 matrix packed for repeated products.
pub struct PackedF32 {
    pub k: usize,
    pub n: usize,
    packed: PackedBMatrix<f32>,
}

impl PackedF32 {
    /// Packs `b[i * row_stride + j * col_stride]` for `i < k`, `j < n`.
    pub fn pack(
        data: &[f32],
        k: usize,
        n: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<PackedF32, String> {
        refuse_empty(k, n)?;
        let view = NdTensorView::from_slice_with_strides([k, n], data, [row_stride, col_stride])
            .map_err(|e| format!("weights do not fit their shape: {e:?}"))?;
        let packed = F32.with(|e| e.prepack_b(view));
        Ok(PackedF32 { k, n, packed })
    }

    /// `out[m, n] = a[m, k] · b + bias`, `a` with row stride `a_stride`.
    pub fn gemm(
        &self,
        out: &mut [f32],
        a: &[f32],
        m: usize,
        a_stride: usize,
        bias: Option<&[f32]>,
    ) -> Result<(), String> {
        let a = NdTensorView::from_slice_with_strides([m, self.k], a, [a_stride, 1])
            .map_err(|e| format!("input does not fit: {e:?}"))?;
        F32.with(|e| {
            e.gemm(
                out,
                GemmInputA::Unpacked(a),
                GemmInputB::Packed(&self.packed),
                GemmOptions {
                    bias: bias.map(BiasVector::Row),
                    ..Default::default()
                },
            )
        })
        .map_err(|e| format!("gemm failed: {e:?}"))
    }
}

/// A `[k, n]` int8 matrix packed for repeated products with uint8 rows.
pub struct PackedI8 {
    pub k: usize,
    pub n: usize,
    packed: PackedBMatrix<i8>,
    /// Σ_k b[k, c], for subtracting each row's zero point: `Σ (a - z) b = Σ a b - z Σ b`.
    /// (rten-gemm's own per-row zero points are wrong past the first row tile in 0.27.)
    col_sums: Vec<i32>,
}

impl PackedI8 {
    pub fn pack(
        data: &[i8],
        k: usize,
        n: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<PackedI8, String> {
        refuse_empty(k, n)?;
        let view = NdTensorView::from_slice_with_strides([k, n], data, [row_stride, col_stride])
            .map_err(|e| format!("weights do not fit their shape: {e:?}"))?;
        let packed = I8.with(|e| e.prepack_b(view));
        let col_sums = (0..n)
            .map(|c| {
                (0..k)
                    .map(|r| i32::from(data[r * row_stride + c * col_stride]))
                    .sum()
            })
            .collect();
        Ok(PackedI8 {
            k,
            n,
            packed,
            col_sums,
        })
    }

    /// `Σ_k b[k, c]` of each column: a zero point `z` of the rows contributes `z` times this
    /// to every product, which callers subtract (or fold into a bias).
    pub fn col_sums(&self) -> &[i32] {
        &self.col_sums
    }

    /// `out[m, n] = Σ_k (a[m, k] - a_zero[m]) · b[k, n]` in i32.
    pub fn gemm(
        &self,
        out: &mut [i32],
        a: &[u8],
        m: usize,
        a_stride: usize,
        a_zero: &[u8],
    ) -> Result<(), String> {
        if a_zero.len() < m || out.len() < m * self.n {
            return Err("int8 gemm given too few zero points or outputs".into());
        }
        self.products(out, a, m, a_stride)?;
        for (row, z) in out.chunks_exact_mut(self.n).zip(a_zero) {
            let z = i32::from(*z);
            for (o, s) in row.iter_mut().zip(&self.col_sums) {
                *o -= z * s;
            }
        }
        Ok(())
    }

    /// `out[m, n] = Σ_k a[m, k] · b[k, n]` in i32, exactly: where the kernel could saturate,
    /// the rows are split into their low 7 bits and their top bit (`a = lo + 128 * hi`) and
    /// multiplied separately, neither of which can.
    pub fn products(
        &self,
        out: &mut [i32],
        a: &[u8],
        m: usize,
        a_stride: usize,
    ) -> Result<(), String> {
        if !int8_may_saturate() {
            return self.gemm_raw(out, a, m, a_stride);
        }
        let mut split = SPLIT.with(|cell| cell.take());
        let result = (|| {
            let (lo, hi, high_out) = &mut split;
            let len = m * self.k;
            lo.resize(len, 0);
            hi.resize(len, 0);
            high_out.resize(out.len(), 0);
            for r in 0..m {
                let row = &a[r * a_stride..r * a_stride + self.k];
                for (j, v) in row.iter().enumerate() {
                    lo[r * self.k + j] = v & 0x7f;
                    hi[r * self.k + j] = v >> 7;
                }
            }
            self.gemm_raw(out, lo, m, self.k)?;
            self.gemm_raw(high_out, hi, m, self.k)?;
            for (o, h) in out.iter_mut().zip(high_out.iter()) {
                *o += 128 * h;
            }
            Ok(())
        })();
        SPLIT.with(|cell| *cell.borrow_mut() = split);
        result
    }

    /// `out = a · b` with no zero points.
    fn gemm_raw(&self, out: &mut [i32], a: &[u8], m: usize, a_stride: usize) -> Result<(), String> {
        let a = NdTensorView::from_slice_with_strides([m, self.k], a, [a_stride, 1])
            .map_err(|e| format!("input does not fit: {e:?}"))?;
        I8.with(|e| {
            e.gemm(
                out,
                GemmInputA::Unpacked(a),
                GemmInputB::Packed(&self.packed),
                GemmOptions::default(),
            )
        })
        .map_err(|e| format!("int8 gemm failed: {e:?}"))
    }
}

/// Batched product of two run-time f32 values, broadcasting leading axes.
struct MatMulF32 {
    batch: Vec<(usize, usize)>,
    m: usize,
    k: usize,
    n: usize,
    a_strides: (usize, usize),
    b_strides: (usize, usize),
}

impl Kernel for MatMulF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let a = inputs[0].f32s()?;
        let b = inputs[1].f32s()?;
        let out = outputs[0].f32s_mut()?;
        let (m, k, n) = (self.m, self.k, self.n);
        for (o, (ia, ib)) in out.chunks_exact_mut(m * n).zip(&self.batch) {
            let av = NdTensorView::from_slice_with_strides(
                [m, k],
                &a[ia * m * k..(ia + 1) * m * k],
                [self.a_strides.0, self.a_strides.1],
            )
            .map_err(|e| format!("{e:?}"))?;
            let bv = NdTensorView::from_slice_with_strides(
                [k, n],
                &b[ib * k * n..(ib + 1) * k * n],
                [self.b_strides.0, self.b_strides.1],
            )
            .map_err(|e| format!("{e:?}"))?;
            F32.with(|e| {
                e.gemm(
                    o,
                    GemmInputA::Unpacked(av),
                    GemmInputB::Unpacked(bv),
                    GemmOptions::default(),
                )
            })
            .map_err(|e| format!("gemm failed: {e:?}"))?;
        }
        Ok(())
    }
}

/// Products of two run-time values; quantized operands go through f32.
pub fn build_matmul(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    super::quantized::wrap_float(ctx, build_matmul_f32)
}

fn build_matmul_f32(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let Op::MatMul { adj_a, adj_b } = ctx.node.op else {
        return Err("not a matmul".into());
    };
    let (a, b, out) = (ctx.in_shape(0)?, ctx.in_shape(1)?, ctx.out_shape(0)?);
    let (ra, rb) = (a.len(), b.len());
    let (m, n) = (out[out.len() - 2], out[out.len() - 1]);
    let k = if adj_a { a[ra - 2] } else { a[ra - 1] };
    let lead = &out[..out.len() - 2];
    let a_lead = &a[..ra - 2];
    let b_lead = &b[..rb - 2];
    // Map each output batch index to its operands' batch indices.
    let total: usize = lead.iter().product();
    let index_of = |shape: &[usize], mut flat: usize| -> usize {
        let mut idx = 0;
        let mut mul = 1;
        let offset = lead.len() - shape.len();
        for axis in (0..lead.len()).rev() {
            let coord = flat % lead[axis];
            flat /= lead[axis];
            if axis >= offset {
                let d = shape[axis - offset];
                idx += if d == 1 { 0 } else { coord * mul };
                mul *= d;
            }
        }
        idx
    };
    let batch = (0..total)
        .map(|i| (index_of(a_lead, i), index_of(b_lead, i)))
        .collect();
    Ok(Box::new(MatMulF32 {
        batch,
        m,
        k,
        n,
        a_strides: if adj_a { (1, m) } else { (k, 1) },
        b_strides: if adj_b { (1, k) } else { (n, 1) },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_weights_are_refused_not_packed() {
        // A fuzzed squeezenet with a zero-channel convolution once divided by zero in rten-gemm.
        for (k, n) in [(0, 4), (4, 0), (0, 0)] {
            let err = PackedF32::pack(&[], k, n, n.max(1), 1).err().unwrap();
            assert!(err.contains("empty"), "{err}");
            let err = PackedI8::pack(&[], k, n, n.max(1), 1).err().unwrap();
            assert!(err.contains("empty"), "{err}");
        }
    }

    #[test]
    fn int8_products_with_a_zero_point_per_row_match_a_reference() {
        let mut rng = aq_test_support::XorShift::new(1);
        for &(m, k, n) in &[(1, 16, 8), (7, 64, 48), (64, 64, 48), (33, 300, 17)] {
            let a: Vec<u8> = (0..m * k).map(|_| rng.next_u64() as u8).collect();
            let b: Vec<i8> = (0..k * n).map(|_| rng.next_u64() as i8).collect();
            let zeros: Vec<u8> = (0..m).map(|_| rng.next_u64() as u8).collect();
            // b is stored [n, k] (a dense layer's weights) and packed transposed.
            let packed = PackedI8::pack(&b, k, n, 1, k).unwrap();
            let mut out = vec![0i32; m * n];
            packed.gemm(&mut out, &a, m, k, &zeros).unwrap();
            // The split the kernel uses where it could saturate gives the exact products; the
            // direct product does too, but only on CPUs whose int8 kernel cannot saturate (on
            // AVX2 without VNNI it saturates, which is why the split exists).
            let exact: Vec<i32> = (0..m * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..k)
                        .map(|j| i32::from(a[r * k + j]) * i32::from(b[c * k + j]))
                        .sum()
                })
                .collect();
            let mut split = vec![0i32; m * n];
            let (lo, hi): (Vec<u8>, Vec<u8>) = a.iter().map(|v| (v & 0x7f, v >> 7)).unzip();
            packed.gemm_raw(&mut split, &lo, m, k).unwrap();
            let mut high = vec![0i32; m * n];
            packed.gemm_raw(&mut high, &hi, m, k).unwrap();
            for (s, h) in split.iter_mut().zip(&high) {
                *s += 128 * h;
            }
            assert_eq!(split, exact, "m={m} k={k} n={n}: split products");
            if !int8_may_saturate() {
                let mut direct = vec![0i32; m * n];
                packed.gemm_raw(&mut direct, &a, m, k).unwrap();
                assert_eq!(direct, exact, "m={m} k={k} n={n}: direct products");
            }
            for r in 0..m {
                for c in 0..n {
                    let want: i32 = (0..k)
                        .map(|j| {
                            (i32::from(a[r * k + j]) - i32::from(zeros[r]))
                                * i32::from(b[c * k + j])
                        })
                        .sum();
                    assert_eq!(out[r * n + c], want, "m={m} k={k} n={n} at ({r}, {c})");
                }
            }
        }
    }

    #[test]
    fn f32_products_match_a_reference() {
        let (m, k, n) = (13, 40, 21);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let packed = PackedF32::pack(&b, k, n, n, 1).unwrap();
        let mut out = vec![0.0; m * n];
        packed.gemm(&mut out, &a, m, k, Some(&bias)).unwrap();
        for r in 0..m {
            for c in 0..n {
                let want: f32 = (0..k).map(|j| a[r * k + j] * b[j * n + c]).sum::<f32>() + bias[c];
                assert!((out[r * n + c] - want).abs() < 1e-3, "({r}, {c})");
            }
        }
    }
}
