use chainrule::network;

network! {
    struct Net: f64 {
        x = input(4);
        x -> input(4) -> affine(4, 2) -> mse
    }
}

fn main() {}
