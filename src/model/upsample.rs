//! Bilinear ×2 upsampling with `align_corners=True` (PyTorch semantics) as two
//! interpolation-matrix products, so candle's matmul backward gives its gradient.

use candle::{Device, Tensor};

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

/// `F.interpolate(xs, scale_factor=2, mode="bilinear", align_corners=True)`.
pub fn upsample_bilinear2x(xs: &Tensor) -> candle::Result<Tensor> {
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
}
