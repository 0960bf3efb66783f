//! How forward passes on a single sample read the affine layers' weights: [`WeightPrecision`],
//! which [`Network::set_one_sample_weights`](crate::Network::set_one_sample_weights) sets and the
//! one-row products (`gemm::one_row`) follow.

/// How forward passes on a single sample read the weights of affine layers (see
/// [`Network::set_one_sample_weights`](crate::Network::set_one_sample_weights)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightPrecision {
    /// As they are: the same products as any batch, up to the order of the sums.
    #[default]
    Full,
    /// Rounded to IEEE half precision (binary16: 11 significant bits, relative error at most
    /// 2⁻¹¹ per weight), widened back to `f32` as they are read; the sums, biases and
    /// activations stay in `f32`. A weight matrix holding a value too large for half precision
    /// (above 65504) keeps full precision. Batches of more than one sample read the weights as
    /// they are; a loss on a single sample reads the copy too.
    Half,
    /// Rounded to bfloat16 (8 significant bits, relative error at most 2⁻⁸ per weight, the
    /// exponent range of `f32`), widened back to `f32` as they are read; the sums, biases and
    /// activations stay in `f32`. Widening takes one shift or mask per 16 weights, less than
    /// [`WeightPrecision::Half`]'s conversion, so this is the fastest of the three and the least
    /// precise. A weight matrix holding a finite value that rounds to infinity (above about
    /// 3.39·10³⁸) keeps full precision. Batches of more than one sample read the weights as they
    /// are; a loss on a single sample reads the copy too.
    BFloat16,
}

impl std::fmt::Display for WeightPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightPrecision::Full => "full precision",
            WeightPrecision::Half => "half precision",
            WeightPrecision::BFloat16 => "bfloat16",
        })
    }
}
