use chainrule::network;

network! {
    pub struct {
        affine(2, 3) -> mse
    }
}

fn main() {}
