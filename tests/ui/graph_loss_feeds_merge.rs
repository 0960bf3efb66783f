use chainrule::network;

network! {
    struct Net: f64 {
        x = input(2);
        l = x -> affine(2, 2) -> mse;
        add(l, x) -> affine(2, 2) -> mse
    }
}

fn main() {}
