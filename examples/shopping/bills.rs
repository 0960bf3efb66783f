// The seed's two bills as graphs; shared by the example and tests/shopping.rs (via `include!`).

network! {
    /// Bill 1: (price × count) / rate + shipping.
    pub struct Bill: f64 {
        #[grad] price = input(1);
        #[grad] count = input(1);
        #[grad] rate = input(1);
        #[grad] shipping = input(1);
        won = mul(price, count);
        dollars = div(won, rate);
        total = add(dollars, shipping);
    }
}

network! {
    /// Bill 2: bill 1 plus friends' items, joining through an add node.
    pub struct BillWithFriends: f64 {
        #[grad] price = input(1);
        #[grad] count = input(1);
        #[grad] rate = input(1);
        #[grad] shipping = input(1);
        #[grad] friends = input(1);
        won = mul(price, count);
        dollars = div(won, rate);
        mine = add(dollars, shipping);
        total = add(mine, friends);
    }
}
