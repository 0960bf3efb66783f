use std::fmt::{Debug, Display};

use ndarray::{LinalgScalar, ScalarOperand};

/// The element types a network computes in: `f32` (the default) and `f64` (for gradient checks).
pub trait Element:
    LinalgScalar
    + ScalarOperand
    + num_traits::Float
    + num_traits::NumAssign
    + std::iter::Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// The type's name as written in Rust (`"f32"` or `"f64"`).
    const NAME: &'static str;
    /// Converts from `f64`, rounding to the nearest value of this type.
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
    /// Converts a count (a batch size) to this type.
    fn from_usize(v: usize) -> Self;
    /// Bytes per element.
    const BYTES: usize;
    /// Appends the little-endian bytes of `self` (checkpoints are little-endian).
    fn extend_le_bytes(self, out: &mut Vec<u8>);
    /// Reads a value from exactly [`Self::BYTES`] little-endian bytes.
    fn from_le_slice(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty) => {
        impl Element for $t {
            const NAME: &'static str = stringify!($t);
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            const BYTES: usize = std::mem::size_of::<$t>();
            fn extend_le_bytes(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn from_le_slice(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("callers pass BYTES bytes"))
            }
        }
    };
}

element!(f32);
element!(f64);
