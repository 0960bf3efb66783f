use chainrule::network;

network! {
    struct Net {
        affine(in = 784, 10) -> mse
    }
}

fn main() {}
