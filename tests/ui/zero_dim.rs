use chainrule::network;

network! {
    struct Net {
        affine(784, 0) -> mse
    }
}

fn main() {}
