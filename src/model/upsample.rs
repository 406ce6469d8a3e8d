//! Bilinear ×2 upsampling with `align_corners=True` (PyTorch semantics): a direct CPU kernel
//! with its adjoint as the backward (f32 on the CPU), else two interpolation-matrix products
//! whose gradient candle's matmul backward gives.

use candle::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_f32, on_cpu_f32};

/// Row-major `(n_out, n_in)` matrix of 1-D linear interpolation with aligned corners:
/// output j samples input position `j·(n_in−1)/(n_out−1)`.
pub fn interp_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0f32; n_out * n_in];
    if n_in == 1 || n_out == 1 {
        for j in 0..n_out {
            m[j * n_in] = 1.0;
        }
        return m;
    }
    let scale = (n_in - 1) as f64 / (n_out - 1) as f64;
    for j in 0..n_out {
        let src = j as f64 * scale;
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let frac = (src - i0 as f64) as f32;
        m[j * n_in + i0] += 1.0 - frac;
        m[j * n_in + i1] += frac;
    }
    m
}

fn matrix(n_in: usize, n_out: usize, transposed: bool, dev: &Device) -> candle::Result<Tensor> {
    let m = interp_matrix(n_in, n_out);
    if transposed {
        // (n_in, n_out), contiguous.
        let mut t = vec![0f32; n_in * n_out];
        for j in 0..n_out {
            for i in 0..n_in {
                t[i * n_out + j] = m[j * n_in + i];
            }
        }
        Tensor::from_vec(t, (n_in, n_out), dev)
    } else {
        Tensor::from_vec(m, (n_out, n_in), dev)
    }
}

/// Per output index: (i0, i1, weight of i1) of 1-D aligned-corner interpolation n → 2n.
fn taps(n_in: usize) -> Vec<(usize, usize, f32)> {
    let n_out = 2 * n_in;
    (0..n_out)
        .map(|j| {
            if n_in == 1 {
                return (0, 0, 0.0);
            }
            let src = j as f64 * (n_in - 1) as f64 / (n_out - 1) as f64;
            let i0 = (src.floor() as usize).min(n_in - 1);
            (i0, (i0 + 1).min(n_in - 1), (src - i0 as f64) as f32)
        })
        .collect()
}

/// (b, c, h, w) → (b, c, 2h, 2w), each plane in parallel: rows blended, then columns.
#[derive(Debug, Clone, Copy)]
struct Bilinear2x;

impl CustomOp1 for Bilinear2x {
    fn name(&self) -> &'static str {
        "noiseda-bilinear2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let x = cpu_f32(s, l, "bilinear upsample")?;
        let (rows, cols) = (taps(h), taps(w));
        let mut out = vec![0f32; b * c * 4 * h * w];
        out.par_chunks_mut(4 * h * w)
            .zip(x.par_chunks(h * w))
            .for_each(|(o, p)| {
                let mut tmp = vec![0f32; w];
                for (j, &(i0, i1, f)) in rows.iter().enumerate() {
                    let (r0, r1) = (&p[i0 * w..(i0 + 1) * w], &p[i1 * w..(i1 + 1) * w]);
                    for ((t, &a), &b) in tmp.iter_mut().zip(r0).zip(r1) {
                        *t = a + f * (b - a);
                    }
                    let orow = &mut o[j * 2 * w..(j + 1) * 2 * w];
                    for (v, &(k0, k1, g)) in orow.iter_mut().zip(&cols) {
                        *v = tmp[k0] + g * (tmp[k1] - tmp[k0]);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&Bilinear2xAdjoint { h, w })?,
        ))
    }
}

/// The adjoint of [`Bilinear2x`]: (b, c, 2h, 2w) → (b, c, h, w).
#[derive(Debug, Clone, Copy)]
struct Bilinear2xAdjoint {
    h: usize,
    w: usize,
}

impl CustomOp1 for Bilinear2xAdjoint {
    fn name(&self) -> &'static str {
        "noiseda-bilinear2x-adjoint"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        let g = cpu_f32(s, l, "bilinear upsample")?;
        let (rows, cols) = (taps(h), taps(w));
        let mut out = vec![0f32; b * c * h * w];
        out.par_chunks_mut(h * w)
            .zip(g.par_chunks(4 * h * w))
            .for_each(|(o, gp)| {
                let mut tmp = vec![0f32; w];
                for (j, &(i0, i1, f)) in rows.iter().enumerate() {
                    tmp.fill(0.0);
                    for (&v, &(k0, k1, gw)) in gp[j * 2 * w..(j + 1) * 2 * w].iter().zip(&cols) {
                        tmp[k0] += v * (1.0 - gw);
                        tmp[k1] += v * gw;
                    }
                    for (k, &t) in tmp.iter().enumerate() {
                        o[i0 * w + k] += t * (1.0 - f);
                        o[i1 * w + k] += t * f;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c, h, w))))
    }
}

/// `F.interpolate(xs, scale_factor=2, mode="bilinear", align_corners=True)`.
pub fn upsample_bilinear2x(xs: &Tensor) -> candle::Result<Tensor> {
    if on_cpu_f32(&[xs]) {
        return xs.contiguous()?.apply_op1(Bilinear2x);
    }
    upsample_bilinear2x_matmul(xs)
}

/// The matrix-product form (any device and dtype).
fn upsample_bilinear2x_matmul(xs: &Tensor) -> candle::Result<Tensor> {
    let (_b, _c, h, w) = xs.dims4()?;
    let dt = xs.dtype();
    let aw = matrix(w, 2 * w, true, xs.device())?.to_dtype(dt)?;
    let ah = matrix(h, 2 * h, false, xs.device())?.to_dtype(dt)?;
    // (b, c, h, w) -> (b, c, h, 2w)
    let xs = xs.contiguous()?.broadcast_matmul(&aw)?;
    // (b, c, h, 2w) -> (b, c, 2h, 2w)
    ah.broadcast_matmul(&xs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{Var, D};

    #[test]
    fn matches_pytorch_align_corners() {
        // torch.nn.functional.interpolate(torch.arange(6.).view(1,1,2,3), scale_factor=2,
        //     mode="bilinear", align_corners=True)[0, 0]:
        let expected: [[f32; 6]; 4] = [
            [0.0, 0.4, 0.8, 1.2, 1.6, 2.0],
            [1.0, 1.4, 1.8, 2.2, 2.6, 3.0],
            [2.0, 2.4, 2.8, 3.2, 3.6, 4.0],
            [3.0, 3.4, 3.8, 4.2, 4.6, 5.0],
        ];
        let xs = Tensor::arange(0f32, 6., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 3))
            .unwrap();
        let ys = upsample_bilinear2x(&xs).unwrap();
        let ys = ys
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, exp) in ys.iter().zip(expected.iter()) {
            for (a, b) in row.iter().zip(exp.iter()) {
                assert!((a - b).abs() < 1e-5, "{ys:?}");
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let x0: Vec<f32> = (0..2 * 3 * 5 * 4)
            .map(|i| ((i * 37 % 17) as f32) / 7.0)
            .collect();
        let weights = Tensor::from_vec(
            (0..2 * 3 * 10 * 8)
                .map(|i| ((i * 13 % 11) as f32) / 5.0 - 1.0)
                .collect::<Vec<_>>(),
            (2, 3, 10, 8),
            &dev,
        )
        .unwrap();
        let loss = |x: &Tensor| {
            (upsample_bilinear2x(x).unwrap() * &weights)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let x = Var::from_vec(x0.clone(), (2, 3, 5, 4), &dev).unwrap();
        let grads = loss(x.as_tensor()).backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let g = g.to_vec1::<f32>().unwrap();
        let h = 1e-2f64;
        for idx in [0usize, 7, 19, 33, 58, 119] {
            let eval = |d: f64| {
                let mut xv: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
                xv[idx] += d;
                let t = Tensor::from_vec(xv, (2, 3, 5, 4), &dev).unwrap();
                let w64 = weights.to_dtype(candle::DType::F64).unwrap();
                (upsample_bilinear2x(&t).unwrap() * &w64)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let rel = (numeric - g[idx] as f64).abs() / numeric.abs().max(1.0);
            assert!(
                rel < 1e-3,
                "idx {idx}: analytic {} numeric {numeric}",
                g[idx]
            );
        }
        let _ = D::Minus1;
    }

    #[test]
    fn direct_kernel_matches_the_matrix_form_and_its_gradient() {
        let dev = Device::Cpu;
        for (b, c, h, w) in [(2, 3, 5, 7), (1, 2, 1, 4), (3, 4, 16, 9)] {
            let x =
                Var::from_tensor(&Tensor::randn(0f32, 1., (b, c, h, w), &dev).unwrap()).unwrap();
            let proj = Tensor::randn(0f32, 1., (b, c, 2 * h, 2 * w), &dev).unwrap();
            let fast = upsample_bilinear2x(x.as_tensor()).unwrap();
            let slow = upsample_bilinear2x_matmul(x.as_tensor()).unwrap();
            let diff = (&fast - &slow).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "{b} {c} {h} {w}");
            let grad = |y: Tensor| {
                let g = (y * &proj).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(x.as_tensor()).unwrap().clone()
            };
            let d = (grad(fast) - grad(slow))
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(
                d.to_scalar::<f32>().unwrap() < 1e-4,
                "gradient {b} {c} {h} {w}"
            );
        }
    }
}
