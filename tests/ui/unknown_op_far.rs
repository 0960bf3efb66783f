use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> lstm -> mse
    }
}

fn main() {}
