use chainrule::network;

network! {
    struct Net: f64 {
        #[gradient] x = input(4);
        #[grad(x)] y = input(4);
        add(x, y) -> affine(4, 2) -> mse
    }
}

fn main() {}
