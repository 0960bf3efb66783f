use chainrule::network;

network! {
    struct Net: f64 {
        x = input(4);
        h = x -> affine(4, 4);
        h = x -> affine(4, 4) -> relu;
        h -> affine(4, 2) -> mse
    }
}

fn main() {}
