use chainrule::network;

network! {
    struct Net {
        affine(2.5, 3) -> mse
    }
}

fn main() {}
