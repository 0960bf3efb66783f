use chainrule::network;

network!(affine(2, 3) -> rleu -> mse);

fn main() {}
