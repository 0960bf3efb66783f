use chainrule::network;

fn main() {
    let net = network!(f64 affine(2, 3) -> mse);
}
