use chainrule::network;

network! {
    struct Net {
        affine(2, 3) -> , relu -> mse
    }
}

fn main() {}
