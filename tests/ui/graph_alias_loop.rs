use chainrule::network;

network! {
    struct Net: f64 {
        x = input(2);
        a = b;
        b = a;
        add(x, a) -> affine(2, 1) -> mse
    }
}

fn main() {}
