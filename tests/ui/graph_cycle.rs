use chainrule::network;

network! {
    struct Net: f64 {
        x = input(2);
        a = b -> relu;
        b = a -> relu;
        add(x, b) -> affine(2, 1) -> mse
    }
}

fn main() {}
