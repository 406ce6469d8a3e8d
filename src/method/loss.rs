//! Loss functions as free functions on tensors.

use candle::Tensor;

/// Charbonnier loss `mean(sqrt((a − b)² + eps²))` (official models/loss.py, eps = 1e-3).
pub fn charbonnier(a: &Tensor, b: &Tensor, eps: f64) -> candle::Result<Tensor> {
    ((a - b)?.sqr()? + eps * eps)?.sqrt()?.mean_all()
}

/// Mean squared error over all elements (`F.mse_loss`).
pub fn mse(a: &Tensor, b: &Tensor) -> candle::Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// Mean squared error of each sample: (b, …) → (b,).
pub fn mse_per_sample(a: &Tensor, b: &Tensor) -> candle::Result<Tensor> {
    (a - b)?.sqr()?.flatten_from(1)?.mean(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn charbonnier_matches_hand_value() {
        let a = Tensor::new(&[0.0f32, 0.5, 1.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.0f32, 0.0, 0.0], &Device::Cpu).unwrap();
        let l = charbonnier(&a, &b, 1e-3)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let expect = (1e-3f64 + (0.25f64 + 1e-6).sqrt() + (1.0f64 + 1e-6).sqrt()) / 3.0;
        assert!((l as f64 - expect).abs() < 1e-6, "{l} vs {expect}");
        let m = mse(&a, &b).unwrap().to_scalar::<f32>().unwrap();
        assert!((m - 1.25 / 3.0).abs() < 1e-6);
        let a2 = a.reshape((3, 1)).unwrap();
        let b2 = b.reshape((3, 1)).unwrap();
        let per = mse_per_sample(&a2, &b2).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(per, vec![0.0, 0.25, 1.0]);
    }
}
