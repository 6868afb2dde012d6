//! The network: the operations it is written in ([`ops::NetOps`]) and the U-Net.

pub mod ops;
pub mod unet;

pub use ops::{NetOps, Unary};
pub use unet::{UNet, UNetConfig};
