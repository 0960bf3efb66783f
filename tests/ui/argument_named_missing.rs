use chainrule::network;

network! {
    struct Net {
        affine(out = 10) -> mse
    }
}

fn main() {}
