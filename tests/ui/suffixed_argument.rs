use chainrule::network;

network! {
    struct Net {
        affine(784u8, 10) -> mse
    }
}

fn main() {}
