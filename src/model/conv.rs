//! Fast CPU convolution: stride-1 "same" conv2d + bias (+ LeakyReLU) forward and both backward
//! passes as candle CustomOps (im2col in row chunks + the gemm crate's AVX-512 kernel, parallel
//! over images and chunks), and the [`ConvLayer`] the nets use (candle's ops off the CPU or
//! off f32).

use candle::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Shape, Tensor};
use candle_nn::VarBuilder;
use gemm::Parallelism;

use super::{cpu_f32, on_cpu_f32};
use rayon::prelude::*;

/// Columns of one im2col chunk: enough positions to feed the GEMM, small enough to stay in
/// cache (K·n floats, K = c_in·k²).
const CHUNK_FLOATS: usize = 1 << 18;

/// Shape of a stride-1 convolution with padding k/2 ("same" output size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    b: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
}

impl Geometry {
    fn pad(&self) -> usize {
        self.k / 2
    }
    /// Rows of the im2col matrix.
    fn kdim(&self) -> usize {
        self.c_in * self.k * self.k
    }
    /// Image rows per chunk (at least one).
    fn rows_per_chunk(&self) -> usize {
        (CHUNK_FLOATS / (self.kdim() * self.w).max(1)).clamp(1, self.h)
    }
    fn chunks(&self) -> Vec<(usize, usize)> {
        let r = self.rows_per_chunk();
        (0..self.h)
            .step_by(r)
            .map(|y0| (y0, r.min(self.h - y0)))
            .collect()
    }
}

/// Writes the im2col columns of image `x` (c_in, h, w) for output rows `y0..y0+rows` into
/// `cols` (K, rows·w), zero outside the image.
fn im2col(x: &[f32], g: &Geometry, y0: usize, rows: usize, cols: &mut [f32]) {
    let (h, w, k, p) = (g.h as isize, g.w, g.k, g.pad() as isize);
    let n = rows * w;
    for c in 0..g.c_in {
        let plane = &x[c * g.h * w..(c + 1) * g.h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut cols[((c * k + ky) * k + kx) * n..][..n];
                let dx = kx as isize - p;
                for r in 0..rows {
                    let sy = (y0 + r) as isize + ky as isize - p;
                    let dst = &mut row[r * w..(r + 1) * w];
                    if sy < 0 || sy >= h {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[sy as usize * w..(sy as usize + 1) * w];
                    // dst[x] = src[x + dx] where in range.
                    let lo = (-dx).max(0) as usize;
                    let hi = (w as isize - dx.max(0)) as usize;
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo < hi {
                        let s0 = (lo as isize + dx) as usize;
                        dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                    }
                }
            }
        }
    }
}

/// Adds the columns `cols` (K, rows·w) of output rows `y0..y0+rows` back into the image
/// gradient `dx` (c_in, h, w): the adjoint of [`im2col`].
fn col2im(cols: &[f32], g: &Geometry, y0: usize, rows: usize, dx: &mut [f32]) {
    let (h, w, k, p) = (g.h as isize, g.w, g.k, g.pad() as isize);
    let n = rows * w;
    for c in 0..g.c_in {
        let plane = &mut dx[c * g.h * w..(c + 1) * g.h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &cols[((c * k + ky) * k + kx) * n..][..n];
                let d = kx as isize - p;
                for r in 0..rows {
                    let sy = (y0 + r) as isize + ky as isize - p;
                    if sy < 0 || sy >= h {
                        continue;
                    }
                    let src = &row[r * w..(r + 1) * w];
                    let dst = &mut plane[sy as usize * w..(sy as usize + 1) * w];
                    let lo = (-d).max(0) as usize;
                    let hi = (w as isize - d.max(0)) as usize;
                    if lo < hi {
                        let s0 = (lo as isize + d) as usize;
                        for (o, v) in dst[s0..s0 + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *o += v;
                        }
                    }
                }
            }
        }
    }
}

/// `dst (m×n, row stride dst_rs) = [dst +] lhs · rhs` with explicit strides (row, column).
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    kd: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    par: Parallelism,
) {
    debug_assert!(m == 0 || dst.len() >= (m - 1) * dst_rs + n);
    // SAFETY: the slices cover every element the strides address (asserted by the callers'
    // shapes: lhs m×kd, rhs kd×n, dst m×n with row stride dst_rs).
    unsafe {
        gemm::gemm(
            m,
            n,
            kd,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

thread_local! {
    /// Each thread's im2col buffer, kept across calls: rayon re-runs `*_init` per split job,
    /// and a fresh zeroed megabyte per job showed up as ~5% of a training step in memset.
    static COLS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's column buffer of `len` floats (contents unspecified: callers
/// overwrite what they read). Re-entrant: a rayon job stolen while this thread waits inside a
/// parallel GEMM gets a fresh buffer.
fn with_cols<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COLS.with(|c| match c.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// GEMM threading of the backward ops, which run one image per rayon task: single-threaded
/// GEMMs when there are enough images to keep every thread busy, else parallel ones.
fn gemm_parallelism(images: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if images >= threads {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// A raw pointer that rayon tasks writing disjoint regions may share.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: every task writes a disjoint region (one image's chunk of output rows).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// Forward: act(x (b, c_in, h, w) ⊛ w (c_out, c_in, k, k) + bias (c_out)) → (b, c_out, h, w),
/// act = LeakyReLU(slope) or identity. The bias seeds the GEMM's accumulator and the
/// activation runs on the chunk while it is in cache.
#[derive(Debug, Clone, Copy)]
struct ConvForward {
    slope: Option<f32>,
}

impl CustomOp3 for ConvForward {
    fn name(&self) -> &'static str {
        "noiseda-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (b, c_in, h, w) = l1.shape().dims4()?;
        let (c_out, c_in2, k, k2) = l2.shape().dims4()?;
        if c_in != c_in2 || k != k2 || k % 2 == 0 || l3.shape().dims() != [c_out] {
            candle::bail!(
                "conv2d: input {:?}, kernel {:?}, bias {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            )
        }
        let g = Geometry {
            b,
            c_in,
            c_out,
            h,
            w,
            k,
        };
        let (x, wt) = (cpu_f32(s1, l1, "input")?, cpu_f32(s2, l2, "kernel")?);
        let bias = cpu_f32(s3, l3, "bias")?;
        let mut out = vec![0f32; b * c_out * h * w];
        let ptr = SyncPtr(out.as_mut_ptr());
        let kd = g.kdim();
        let tasks: Vec<(usize, usize, usize)> = (0..b)
            .flat_map(|i| g.chunks().into_iter().map(move |(y0, r)| (i, y0, r)))
            .collect();
        tasks.par_iter().for_each(|&(i, y0, rows)| {
            let n = rows * w;
            let img = &x[i * c_in * h * w..(i + 1) * c_in * h * w];
            with_cols(if k == 1 { 0 } else { kd * n }, |cols| {
                // 1×1: the image rows are the columns already.
                let rhs: &[f32] = if k == 1 {
                    &img[y0 * w..]
                } else {
                    im2col(img, &g, y0, rows, cols);
                    cols
                };
                let rhs_rs = if k == 1 { h * w } else { n };
                // SAFETY: task (i, y0) owns output rows y0..y0+rows of image i in every channel.
                let dst = unsafe {
                    let p = ptr;
                    std::slice::from_raw_parts_mut(
                        p.0.add(i * c_out * h * w + y0 * w),
                        (c_out - 1) * h * w + n,
                    )
                };
                for (o, &bv) in bias.iter().enumerate() {
                    dst[o * h * w..o * h * w + n].fill(bv);
                }
                matmul(
                    c_out,
                    n,
                    kd,
                    dst,
                    h * w,
                    true,
                    wt,
                    (kd, 1),
                    rhs,
                    (rhs_rs, 1),
                    Parallelism::None,
                );
                if let Some(slope) = self.slope {
                    for o in 0..c_out {
                        for v in &mut dst[o * h * w..o * h * w + n] {
                            if *v < 0.0 {
                                *v *= slope;
                            }
                        }
                    }
                }
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c_out, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Through the activation first: LeakyReLU keeps the sign, so the output tells which side.
        let grad = match self.slope {
            Some(slope) => grad
                .contiguous()?
                .apply_op2_no_bwd(res, &LeakyGrad { slope })?,
            None => grad.contiguous()?,
        };
        let dx = grad.apply_op2_no_bwd(wt, &ConvBackwardInput)?;
        let dw = x.apply_op2_no_bwd(&grad, &ConvBackwardKernel { k: wt.dim(2)? })?;
        let (b, c, h, w) = grad.dims4()?;
        let db = grad
            .reshape((b, c, h * w))?
            .sum(2)?
            .sum(0)?
            .to_dtype(bias.dtype())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// grad · LeakyReLU'(out): grad where the output is positive, slope·grad elsewhere.
#[derive(Debug, Clone, Copy)]
struct LeakyGrad {
    slope: f32,
}

impl CustomOp2 for LeakyGrad {
    fn name(&self) -> &'static str {
        "noiseda-leaky-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (g, out) = (cpu_f32(s1, l1, "grad")?, cpu_f32(s2, l2, "output")?);
        let slope = self.slope;
        let mut d = vec![0f32; g.len()];
        d.par_chunks_mut(1 << 14)
            .zip(g.par_chunks(1 << 14).zip(out.par_chunks(1 << 14)))
            .for_each(|(d, (g, o))| {
                for ((d, &g), &o) in d.iter_mut().zip(g).zip(o) {
                    *d = if o > 0.0 { g } else { g * slope };
                }
            });
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
}

/// Input gradient: grad (b, c_out, h, w), w (c_out, c_in, k, k) → (b, c_in, h, w).
#[derive(Debug, Clone, Copy)]
struct ConvBackwardInput;

impl CustomOp2 for ConvBackwardInput {
    fn name(&self) -> &'static str {
        "noiseda-conv2d-bwd-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (b, c_out, h, w) = l1.shape().dims4()?;
        let (c_out2, c_in, k, _) = l2.shape().dims4()?;
        if c_out != c_out2 {
            candle::bail!(
                "conv2d backward: grad {:?} vs kernel {:?}",
                l1.shape(),
                l2.shape()
            )
        }
        let g = Geometry {
            b,
            c_in,
            c_out,
            h,
            w,
            k,
        };
        let (gr, wt) = (cpu_f32(s1, l1, "grad")?, cpu_f32(s2, l2, "kernel")?);
        let kd = g.kdim();
        let mut dx = vec![0f32; b * c_in * h * w];
        // Parallel over images (col2im of neighbouring chunks overlaps); each image's chunks
        // in turn, the GEMM itself parallel when there are fewer images than threads.
        let par = gemm_parallelism(b);
        dx.par_chunks_mut(c_in * h * w)
            .enumerate()
            .for_each(|(i, dxi)| {
                let gi = &gr[i * c_out * h * w..(i + 1) * c_out * h * w];
                for (y0, rows) in g.chunks() {
                    let n = rows * w;
                    if k == 1 {
                        // dx rows = wᵀ · grad rows, written in place.
                        matmul(
                            c_in,
                            n,
                            c_out,
                            &mut dxi[y0 * w..],
                            h * w,
                            false,
                            wt,
                            (1, kd),
                            &gi[y0 * w..],
                            (h * w, 1),
                            par,
                        );
                        continue;
                    }
                    with_cols(kd * n, |cols| {
                        matmul(
                            kd,
                            n,
                            c_out,
                            cols,
                            n,
                            false,
                            wt,
                            (1, kd),
                            &gi[y0 * w..],
                            (h * w, 1),
                            par,
                        );
                        col2im(cols, &g, y0, rows, dxi);
                    });
                }
            });
        Ok((CpuStorage::F32(dx), Shape::from((b, c_in, h, w))))
    }
}

/// Kernel gradient: x (b, c_in, h, w), grad (b, c_out, h, w) → (c_out, c_in, k, k).
#[derive(Debug, Clone, Copy)]
struct ConvBackwardKernel {
    k: usize,
}

impl CustomOp2 for ConvBackwardKernel {
    fn name(&self) -> &'static str {
        "noiseda-conv2d-bwd-kernel"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (b, c_in, h, w) = l1.shape().dims4()?;
        let (_, c_out, _, _) = l2.shape().dims4()?;
        let k = self.k;
        let g = Geometry {
            b,
            c_in,
            c_out,
            h,
            w,
            k,
        };
        let (x, gr) = (cpu_f32(s1, l1, "input")?, cpu_f32(s2, l2, "grad")?);
        let kd = g.kdim();
        // One partial dW = Σ_chunks grad_chunk · colsᵀ per image, in parallel, then summed in
        // image order: the result does not depend on how rayon schedules (exact resume).
        let par = gemm_parallelism(b);
        let partials: Vec<Vec<f32>> = (0..b)
            .into_par_iter()
            .map(|i| {
                let mut acc = vec![0f32; c_out * kd];
                let img = &x[i * c_in * h * w..(i + 1) * c_in * h * w];
                for (y0, rows) in g.chunks() {
                    let n = rows * w;
                    let gi = &gr[i * c_out * h * w + y0 * w..];
                    with_cols(if k == 1 { 0 } else { kd * n }, |cols| {
                        let (rhs, rhs_cs): (&[f32], usize) = if k == 1 {
                            (&img[y0 * w..], h * w)
                        } else {
                            im2col(img, &g, y0, rows, cols);
                            (&cols[..], n)
                        };
                        matmul(
                            c_out,
                            kd,
                            n,
                            &mut acc,
                            kd,
                            true,
                            gi,
                            (h * w, 1),
                            rhs,
                            (1, rhs_cs),
                            par,
                        );
                    });
                }
                acc
            })
            .collect();
        let mut dw = vec![0f32; c_out * kd];
        for p in &partials {
            dw.iter_mut().zip(p).for_each(|(a, v)| *a += v);
        }
        Ok((CpuStorage::F32(dw), Shape::from((c_out, c_in, k, k))))
    }
}

/// `act(x ⊛ w + bias)` for a stride-1 convolution with padding k/2 (odd k), act = LeakyReLU
/// with `slope` or identity: the fast CPU kernels for f32 on the CPU, candle's ops otherwise.
pub fn conv2d_same(
    xs: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    slope: Option<f64>,
) -> candle::Result<Tensor> {
    let c_out = w.dim(0)?;
    if on_cpu_f32(&[xs, w]) {
        let zeros;
        let bias = match bias {
            Some(b) => b.contiguous()?,
            None => {
                zeros = Tensor::zeros(c_out, DType::F32, xs.device())?;
                zeros.clone()
            }
        };
        return xs.contiguous()?.apply_op3(
            &w.contiguous()?,
            &bias,
            ConvForward {
                slope: slope.map(|s| s as f32),
            },
        );
    }
    let mut out = xs.conv2d(w, w.dim(2)? / 2, 1, 1, 1)?;
    if let Some(b) = bias {
        out = out.broadcast_add(&b.reshape((1, c_out, 1, 1))?)?;
    }
    match slope {
        // max(x, slope·x) == LeakyReLU for 0 < slope < 1.
        Some(s) => out.maximum(&(&out * s)?),
        None => Ok(out),
    }
}

/// A stride-1 "same" convolution layer with bias (official names `weight`, `bias`). Not
/// candle's `Conv2d`: its own constructor (`new(vb, c_in, c_out, k, bias)`) and fused ops.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl ConvLayer {
    /// Kaiming-normal weight and uniform bias hints (the trainer re-initialises anyway).
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        bias: bool,
    ) -> candle::Result<Self> {
        let weight = vb.get_with_hints(
            (c_out, c_in, k, k),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias = if bias {
            let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
            Some(vb.get_with_hints(
                c_out,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl ConvLayer {
    /// LeakyReLU(conv(x) + bias) in one fused op (0 < slope < 1).
    pub fn forward_leaky(&self, xs: &Tensor, slope: f64) -> candle::Result<Tensor> {
        conv2d_same(xs, &self.weight, self.bias.as_ref(), Some(slope))
    }
}

impl Module for ConvLayer {
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        conv2d_same(xs, &self.weight, self.bias.as_ref(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_rel;
    use candle::{Device, Var};

    /// Forward and every gradient against candle's ops (conv2d, bias broadcast, LeakyReLU as
    /// a maximum) on odd sizes, 1×1, 3×3 and 5×5, batches below and above the thread count, a
    /// tall image that splits into several chunks, with and without the fused activation.
    #[test]
    fn matches_candle_ops_forward_and_gradients() {
        let dev = Device::Cpu;
        let var = |shape: &[usize]| {
            Var::from_tensor(&Tensor::randn(0f32, 1., shape, &dev).unwrap()).unwrap()
        };
        for &(b, c_in, c_out, h, w, k) in &[
            (1, 3, 5, 7, 9, 3),
            (3, 4, 6, 13, 5, 3),
            (2, 8, 3, 6, 11, 1),
            (1, 2, 2, 1, 1, 3),
            (2, 40, 16, 300, 33, 3),
            (5, 6, 4, 9, 9, 5),
        ] {
            for slope in [None, Some(0.2)] {
                let (x, wt, bias) = (
                    var(&[b, c_in, h, w]),
                    var(&[c_out, c_in, k, k]),
                    var(&[c_out]),
                );
                let ours =
                    conv2d_same(x.as_tensor(), wt.as_tensor(), Some(bias.as_tensor()), slope)
                        .unwrap();
                let pre = x
                    .as_tensor()
                    .conv2d(wt.as_tensor(), k / 2, 1, 1, 1)
                    .unwrap()
                    .broadcast_add(&bias.as_tensor().reshape((1, c_out, 1, 1)).unwrap())
                    .unwrap();
                let theirs = match slope {
                    Some(s) => pre.maximum(&(&pre * s).unwrap()).unwrap(),
                    None => pre.clone(),
                };
                // LeakyReLU has no derivative at 0: where the pre-activation is within float
                // rounding of the kink, the two summation orders may pick different sides (a
                // 1 vs `slope` factor on that element's gradient). Those outputs get no weight
                // in the projection, so the check compares only well-defined gradients.
                let away_from_kink = pre.abs().unwrap().ge(1e-4).unwrap().to_dtype(DType::F32);
                let proj = (Tensor::randn(0f32, 1., (b, c_out, h, w), &dev).unwrap()
                    * away_from_kink.unwrap())
                .unwrap();
                let case = format!("b{b} {c_in}->{c_out} {h}x{w} k{k} slope {slope:?}");
                assert!(max_rel(&ours, &theirs) < 1e-5, "{case}: forward");
                let grads = |y: Tensor| (y * &proj).unwrap().sum_all().unwrap().backward().unwrap();
                let (g1, g2) = (grads(ours), grads(theirs));
                for (name, v) in [("input", &x), ("kernel", &wt), ("bias", &bias)] {
                    let a = g1.get(v.as_tensor()).unwrap();
                    let r = g2.get(v.as_tensor()).unwrap();
                    assert!(
                        max_rel(a, r) < 1e-4,
                        "{case}: {name} gradient {}",
                        max_rel(a, r)
                    );
                }
            }
        }
    }

    #[test]
    fn layer_matches_candle_and_falls_back_off_f32() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let conv = ConvLayer::new(vb, 2, 3, 3, true).unwrap();
        let x = Tensor::randn(0f32, 1., (1, 2, 4, 4), &dev).unwrap();
        let ours = conv.forward(&x).unwrap();
        let reference = x
            .conv2d(conv.weight(), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&conv.bias.as_ref().unwrap().reshape((1, 3, 1, 1)).unwrap())
            .unwrap();
        assert!(max_rel(&ours, &reference) < 1e-5);
        // f64 takes candle's ops and gives the same values.
        let y = conv2d_same(
            &x.to_dtype(DType::F64).unwrap(),
            &conv.weight().to_dtype(DType::F64).unwrap(),
            Some(&conv.bias.as_ref().unwrap().to_dtype(DType::F64).unwrap()),
            Some(0.2),
        )
        .unwrap();
        assert_eq!(y.dtype(), DType::F64);
        let fast = conv.forward_leaky(&x, 0.2).unwrap();
        assert!(max_rel(&fast, &y.to_dtype(DType::F32).unwrap()) < 1e-5);
    }
}
