use chainrule::network;

network! {
    struct Net {
        x = input(4);
        h = x -> affine(5, 3);
        add(h, nope) -> mse
    }
}

fn main() {}
