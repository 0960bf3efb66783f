use chainrule::network;

network! {
    struct Net: f64 {
        x = input(4);
        relu = x -> affine(4, 4) -> relu;
        relu -> affine(4, 2) -> mse
    }
}

fn main() {}
