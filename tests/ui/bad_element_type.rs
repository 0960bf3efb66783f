use chainrule::network;

network! {
    struct Net: i32 {
        affine(2, 3) -> mse
    }
}

fn main() {}
