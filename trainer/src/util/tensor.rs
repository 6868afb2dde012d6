//! Tensors out of tch: the one conversion to plain values that files, figures, digests and metrics use.

use tch::{Device, Kind, Tensor};

/// Every value of `t` as float32, on the CPU, in row-major order.
pub fn to_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(
        t.detach()
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .contiguous()
            .reshape([-1]),
    )
    .expect("a float32 tensor converts")
}
