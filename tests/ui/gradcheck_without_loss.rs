use chainrule::network;

network! {
    #[gradcheck]
    struct Net {
        affine(784, 10) -> softmax
    }
}

fn main() {}
