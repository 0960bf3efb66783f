use chainrule::network;

network! {
    struct Net: f64 {
        x = input(4);
        hidden = x -> affine(4, 6) -> relu;
        hiden -> affine(6, 2) -> mse
    }
}

fn main() {}
