use chainrule::network;

network! {
    struct Net: f64 {
        x = input(4);
        #[grad] extra = input(2);
        x -> affine(4, 2) -> mse
    }
}

fn main() {}
