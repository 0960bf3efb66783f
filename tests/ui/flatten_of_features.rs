use chainrule::network;

network! {
    struct Net {
        affine(784, 50) -> flatten -> mse
    }
}

fn main() {}
