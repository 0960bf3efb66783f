use chainrule::network;

network! {
    struct Net {
        x = input(3);
        y = x;
        x -> affine(3, 1) -> mse
    }
}

fn main() {}
