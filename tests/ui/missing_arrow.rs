use chainrule::network;

network! {
    struct Net {
        affine(2, 3) relu -> affine(3, 1) -> mse
    }
}

fn main() {}
