use chainrule::network;

const N: usize = 2;

network! {
    struct Net {
        affine(N, 3) -> mse
    }
}

fn main() {}
