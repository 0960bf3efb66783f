use chainrule::network;

network! {
    struct Net {
        x = input(4);
        h = x -> affine(4, 3) relu;
        r = x -> affine(5, 3);
        add(h, r) -> affine(3, 1) -> mse
    }
}

fn main() {}
