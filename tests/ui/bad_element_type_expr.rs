use chainrule::network;

fn main() {
    let net = network!(i32: affine(2, 3) -> mse);
}
