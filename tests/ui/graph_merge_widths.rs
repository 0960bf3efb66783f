use chainrule::network;

network! {
    struct Net: f64 {
        x = input(4);
        h = x -> affine(4, 6) -> relu;
        r = x -> affine(4, 3) -> tanh;
        add(h, r) -> affine(6, 2) -> mse
    }
}

fn main() {}
