use chainrule::network;

network! {
    struct Net: f64 {
        input(4);
        affine(4, 2) -> mse
    }
}

fn main() {}
