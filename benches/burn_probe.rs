//! Measures burn's Flex backend on the executor's matrix shapes and the cost of a small
//! element-wise op: the other half of the evidence for src/kernels/.
//! Run: cargo bench --bench burn_probe
use burn::tensor::{activation, Device, Tensor, TensorData};
use std::time::Instant;

fn main() {
    let dev = Device::flex();
    for &(m, k, n) in &[(26usize, 384usize, 384usize), (26, 384, 1536), (128, 384, 1536), (832, 384, 1536)] {
        let a: Tensor<2> = Tensor::from_data(TensorData::new(vec![0.01f32; m * k], [m, k]), &dev);
        let b: Tensor<2> = Tensor::from_data(TensorData::new(vec![0.02f32; k * n], [k, n]), &dev);
        let _ = a.clone().matmul(b.clone()).into_data();
        let it = 200;
        let t = Instant::now();
        let mut s = 0.0f32;
        for _ in 0..it {
            let c = a.clone().matmul(b.clone());
            s += c.slice([0..1, 0..1]).into_scalar::<f32>();
        }
        let dt = t.elapsed().as_secs_f64() / it as f64;
        println!("burn matmul {m}x{k}x{n}: {:.1} us, {:.1} GFLOP/s (checksum {s})", dt * 1e6, 2.0 * (m * k * n) as f64 / dt / 1e9);
    }
    let a: Tensor<2> = Tensor::from_data(TensorData::new(vec![0.01f32; 26 * 384], [26, 384]), &dev);
    let it = 2000;
    let t = Instant::now();
    let mut x = a;
    for _ in 0..it {
        x = activation::gelu(x.add_scalar(0.0));
    }
    let _ = x.into_data();
    println!("burn add + gelu on [26, 384]: {:.2} us", t.elapsed().as_secs_f64() / it as f64 * 1e6);
}
