use chainrule::network;

network! {
    struct Net {
        -> affine(2, 3) -> mse
    }
}

fn main() {}
