use chainrule::network;

network! {
    struct Net {
        h = affine(4, 3) -> relu;
        add(h, input) -> mse
    }
}

fn main() {}
