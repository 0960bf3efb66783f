use chainrule::network;

// A dropout keeps each unit with probability 1 − p: p = 1 would keep nothing (and scale by 1/0).
network! {
    struct Net {
        affine(784, 50) -> relu -> dropout(1.0) -> affine(50, 10) -> dropout(p = -0.5)
            -> dropout(1) -> softmax_cross_entropy
    }
}

fn main() {}
