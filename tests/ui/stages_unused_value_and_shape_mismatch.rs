use chainrule::network;

network! {
    struct Net {
        x = input(4);
        u = x -> relu;
        x -> affine(5, 2) -> mse
    }
}

fn main() {}
