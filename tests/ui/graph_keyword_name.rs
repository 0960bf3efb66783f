use chainrule::network;

network! {
    struct Net {
        type = input(3);
        type -> affine(3, 1) -> mse
    }
}

fn main() {}
