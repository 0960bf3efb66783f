use chainrule::network;

// The channel count comes from the input: a number in order is the momentum, out of range here.
network! {
    struct Net {
        input(1, 28, 28) -> conv2d(1, 16, 3) -> batchnorm(16) -> relu -> flatten
            -> affine(10816, 10) -> softmax_cross_entropy
    }
}

fn main() {}
