use chainrule::network;

network! {
    struct Net {
        x = input(3);
        h = x -> affine(3, 3);
        sum(h, x) -> mse
    }
}

fn main() {}
