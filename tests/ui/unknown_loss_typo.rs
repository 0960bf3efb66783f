use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> sofmax_cross_entropy
    }
}

fn main() {}
