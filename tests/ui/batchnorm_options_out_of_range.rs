use chainrule::network;

// momentum is the weight of a batch's statistics in the running ones (0 to 1); ε must be positive.
network! {
    struct Net {
        input(1, 28, 28) -> conv2d(1, 8, 3) -> batchnorm(momentum = 1.5) -> relu -> flatten
            -> affine(5408, 10) -> batchnorm(eps = 0) -> softmax_cross_entropy
    }
}

fn main() {}
