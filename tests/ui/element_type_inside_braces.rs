use chainrule::network;

network! {
    struct Net {
        f64: affine(2, 3) -> mse
    }
}

fn main() {}
