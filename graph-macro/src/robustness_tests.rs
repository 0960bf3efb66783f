//! The macro must never panic: whatever it is given, it answers with either valid Rust or nothing
//! but `compile_error!`s. These tests run [`crate::expand`] over malformed and odd inputs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use proc_macro2::{Delimiter, Group, Literal, Punct, Spacing, TokenStream, TokenTree};
use quote::quote;

/// What an expansion turned out to be.
#[derive(Debug)]
enum Outcome {
    /// Valid Rust: items (item form) or an expression (expression form).
    Code,
    /// Only `compile_error!`s, with these messages.
    Errors(Vec<String>),
}

/// Expands `input`, failing the test (with the input in the message) if the macro panics or
/// answers with anything but valid Rust or `compile_error!`s alone.
fn outcome(input: TokenStream) -> Outcome {
    let shown = input.to_string();
    let output = catch_unwind(AssertUnwindSafe(|| crate::expand(input)))
        .unwrap_or_else(|_| panic!("network! panicked on: {shown}"));
    if let Some(messages) = only_compile_errors(&output) {
        assert!(!messages.is_empty(), "no error message for: {shown}");
        for message in &messages {
            assert!(!message.trim().is_empty(), "an empty message for: {shown}");
        }
        return Outcome::Errors(messages);
    }
    assert!(
        !output.to_string().contains("compile_error"),
        "errors mixed with code for: {shown}\n{output}"
    );
    let valid = syn::parse2::<syn::File>(output.clone()).is_ok()
        || syn::parse2::<syn::Expr>(output.clone()).is_ok();
    assert!(
        valid,
        "neither valid Rust nor errors for: {shown}\n{output}"
    );
    Outcome::Code
}

/// The messages, if `output` is `compile_error!`s and nothing else (bare, or in one block).
fn only_compile_errors(output: &TokenStream) -> Option<Vec<String>> {
    let stmts: Vec<syn::Stmt> = if let Ok(file) = syn::parse2::<syn::File>(output.clone()) {
        file.items.into_iter().map(syn::Stmt::Item).collect()
    } else {
        match syn::parse2::<syn::Expr>(output.clone()).ok()? {
            syn::Expr::Block(block) => block.block.stmts,
            syn::Expr::Macro(mac) => vec![syn::Stmt::Expr(syn::Expr::Macro(mac), None)],
            _ => return None,
        }
    };
    stmts
        .iter()
        .map(|stmt| {
            let mac = match stmt {
                syn::Stmt::Item(syn::Item::Macro(item)) => &item.mac,
                syn::Stmt::Macro(stmt) => &stmt.mac,
                syn::Stmt::Expr(syn::Expr::Macro(expr), _) => &expr.mac,
                _ => return None,
            };
            let last = mac.path.segments.last()?;
            if last.ident != "compile_error" {
                return None;
            }
            let message: syn::LitStr = mac.parse_body().ok()?;
            Some(message.value())
        })
        .collect::<Option<Vec<_>>>()
        .filter(|messages| !messages.is_empty())
}

/// Expands `input` and returns its messages, failing the test if it compiled.
fn errors(input: TokenStream) -> Vec<String> {
    let shown = input.to_string();
    match outcome(input) {
        Outcome::Errors(messages) => messages,
        Outcome::Code => panic!("expected errors for: {shown}"),
    }
}

/// Lexes `source` as a macro's input would be (it must have balanced delimiters).
fn tokens(source: &str) -> TokenStream {
    TokenStream::from_str(source).unwrap_or_else(|e| panic!("cannot lex {source:?}: {e}"))
}

/// Both forms of a chain: `struct N { chain }` and the bare expression form.
fn both_forms(chain: &str) -> [TokenStream; 2] {
    [tokens(&format!("struct N {{ {chain} }}")), tokens(chain)]
}

/// Every mistake of the UI suite, plus odd ones, in the item form and the expression form.
const BAD_CHAINS: &[&str] = &[
    // Shapes.
    "affine(784, 50) -> affine(40, 10) -> softmax_cross_entropy",
    "affine(784, 50) -> relu -> affine(40, 10) -> softmax_cross_entropy",
    "affine(784, 1) -> softmax_cross_entropy",
    "relu -> affine(2, 3)",
    "mse",
    "softmax_cross_entropy",
    "relu -> relu -> relu",
    // Unknown ops.
    "affine(784, 50) -> rleu -> affine(50, 10)",
    "affine(784, 10) -> sofmax_cross_entropy",
    "affine(784, 10) -> Softmax",
    "affine(784, 10) -> softmax -> softmax_cross_entropy -> softmax",
    "affine(784, 10) -> convolution",
    "linear(2, 3)",
    "ReLU",
    "rélu -> affine(2, 3)",
    "データ(2, 3)",
    "r#affine(2, 3)",
    "self",
    "Self(2, 3)",
    "_",
    // Arguments.
    "affine(784)",
    "affine",
    "affine()",
    "affine(1, 2, 3)",
    "affine(2, 3) -> relu(3)",
    "affine(2, 3) -> relu(,)",
    "affine(2.5, 3)",
    "affine(1e10, 3)",
    "affine(N, 3)",
    "affine(crate::N, 3)",
    "affine(<T as X>::N, 3)",
    "affine(\"a\", 3)",
    "affine('a', 3)",
    "affine(b'a', 3)",
    "affine(true, 3)",
    "affine(-1, 2)",
    "affine(-0, 2)",
    "affine(--1, 2)",
    "affine(!1, 2)",
    "affine(1 + 1, 2)",
    "affine(2,, 3)",
    "affine(,)",
    "affine(2 3)",
    "affine(2; 3)",
    "affine([2], 3)",
    "affine({ 2 }, 3)",
    "affine((((2))), 3)",
    "affine(|| 2, 3)",
    "affine(2, 3)(4, 5)",
    "affine[2, 3]",
    "affine{2, 3}",
    "affine(784u8, 10)",
    "affine(784i32, 10)",
    "affine(784f32, 10)",
    "affine(0, 0)",
    "affine(784, 0)",
    "affine(100000000000000000000000, 3)",
    "affine(340282366920938463463374607431768211456, 3)",
    "affine(18446744073709551616, 1)",
    "affine(4294967296, 4294967296)",
    "affine(18446744073709551615, 1)",
    "affine(4294967296, 4294967295) -> affine(4294967295, 1)",
    // Typed and named arguments.
    "affine(2, 3) -> leaky_relu(-0.1)",
    "affine(2, 3) -> leaky_relu(alpha = 1, alpha = 2)",
    "affine(2, 3) -> leaky_relu(beta = 1)",
    "affine(2, 3) -> leaky_relu(0.1, 0.2)",
    "affine(2, 3) -> leaky_relu(1e999)",
    "affine(2, 3) -> leaky_relu(-1e999)",
    "affine(2, 3) -> leaky_relu(\"a\")",
    "affine(2, 3) -> leaky_relu(0.1f32)",
    "affine(2, 3) -> leaky_relu(ALPHA)",
    "affine(2, 3) -> leaky_relu(alpha =)",
    "affine(2, 3) -> leaky_relu(= 1)",
    "affine(2, 3) -> leaky_relu(alpha == 1)",
    "affine(2, 3) -> leaky_relu(a.b = 1)",
    "affine(2, 3) -> elu(0)",
    "affine(2, 3) -> elu(-1)",
    "affine(in = 2, 3)",
    "affine(in = 2)",
    "affine(2, out = 3, in = 2)",
    "affine(2, in = 2)",
    "affine(in = 0, out = 3)",
    "affine(2, 3) -> relu(alpha = 1)",
    // Shapes of higher rank.
    "input(0) -> relu",
    "input() -> relu",
    "input -> relu",
    "input(1, 2, 3, 4) -> relu",
    "input(18446744073709551615, 2) -> relu",
    "input(shape = 3) -> relu",
    "input(1, 28, 28) -> affine(100, 10)",
    "input(1, 28, 28) -> conv2d(3, 8, 3)",
    "input(1, 28, 28) -> conv2d(1, 8, 3, stride = 2)",
    "input(1, 4, 4) -> max_pool(8)",
    "input(1, 4, 4) -> max_pool(2, pad = 2)",
    "input(1, 4, 4) -> avg_pool(2, exact = maybe)",
    "input(16) -> max_pool(2)",
    "input(16) -> flatten",
    "affine(4, 4) -> conv2d(1, 1, 1)",
    "input(2, 2, 2) -> softmax",
    "input(2, 2, 2) -> softmax_cross_entropy",
    "input(3) -> input(3)",
    "input(3); input(3) -> relu",
    "input(3) -> relu; input(3) -> relu",
    "x = input(3); input(3) -> relu",
    // Losses.
    "affine(784, 10) -> softmax_cross_entropy -> relu",
    "affine(784, 10) -> softmax_cross_entropy -> mse",
    "affine(2, 3) -> mse -> relu -> mse",
    "affine(2, 3) -> mse -> mse -> mse -> mse",
    // Syntax.
    "->",
    "-> ->",
    "affine(2, 3) relu",
    "affine(2, 3) -> relu ->",
    "-> affine(2, 3)",
    "affine(2,3) -> , relu",
    "affine(2,3) , relu",
    "affine(2,3) -> relu;;",
    "affine(2, 3) -> -> relu",
    "affine(2, 3) => relu",
    "affine(2, 3) - > relu",
    "affine(2, 3) <- relu",
    "affine(2, 3) :: relu",
    "affine::relu",
    "affine(2, 3) -> 'a",
    "affine(2, 3) -> 7",
    "\"string\"",
    "123",
    "'a",
    "(affine(2, 3))",
    "((affine(2, 3)))",
    "[affine(2, 3)]",
    "{ affine(2, 3) }",
    ":",
    ": affine(2, 3)",
    "f64 affine(2, 3)",
    "f64::affine(2, 3)",
    "f64: f64: affine(2, 3)",
    "i32: affine(2, 3)",
    "f64:",
    "f64: ->",
    "match",
    "affine(2, 3) -> struct",
    "affine(2, 3) -> fn",
    "#",
    "!",
    "$",
    "@ affine(2, 3)",
];

/// Item-form inputs whose mistakes are outside the chain.
const BAD_ITEMS: &[&str] = &[
    "struct",
    "pub",
    "pub struct",
    "pub struct X",
    "struct X: ",
    "struct X: {}",
    "struct X: { affine(2, 3) }",
    "struct X: i32 { affine(2, 3) }",
    "struct X: f64 f64 { affine(2, 3) }",
    "struct X: Vec<f32> { affine(2, 3) }",
    "struct X: ::f32 { affine(2, 3) }",
    "struct X {}",
    "struct N {}",
    "struct X { affine(2, 3) } extra",
    "struct X { affine(2, 3) };",
    "struct X { affine(2, 3) } struct Y { relu }",
    "struct X ( affine(2, 3) )",
    "struct X [ affine(2, 3) ]",
    "struct X -> affine(2, 3)",
    "struct { affine(2, 3) }",
    "struct 5 { affine(2, 3) }",
    "struct struct { affine(2, 3) }",
    "struct X<T> { affine(2, 3) }",
    "pub(crate) struct X { relu }",
    "pub(in foo) struct",
    "pub(nonsense) struct X { affine(2, 3) }",
    "pub pub struct X { affine(2, 3) }",
    "#[doc = 1]",
    "#[doc = 1] struct",
    "#[doc = 1] struct X { rleu }",
    "#[doc = \"x\"] pub",
    "#",
    "#!",
    "# []",
    "#[]",
    "#![doc = \"inner\"] struct X { affine(2, 3) }",
    "#[doc] fn x() {}",
    "/// doc only",
    "struct X { { affine(2, 3) } }",
    "struct X { ( affine(2, 3) ) }",
    "struct X { affine(2, 3) -> { relu } }",
    "#[gradcheck] struct X { affine(2, 3) }",
    "#[gradcheck] struct X { x = input(2); x -> relu }",
    "#[gradcheck(all)] struct X { affine(2, 3) -> mse }",
    "#[gradcheck = 1] struct X { affine(2, 3) -> mse }",
    "#[gradcheck] #[gradcheck] struct X { affine(2, 3) -> mse }",
    "#[gradcheck] struct X { affine(2, 3) -> rleu -> mse }",
    "#[gradcheck]",
    "#[gradcheck] struct X {}",
];

#[test]
fn malformed_chains_give_errors_in_both_forms() {
    for chain in BAD_CHAINS {
        for input in both_forms(chain) {
            errors(input);
        }
    }
}

#[test]
fn malformed_items_give_errors() {
    for item in BAD_ITEMS {
        errors(tokens(item));
    }
}

#[test]
fn empty_inputs_give_errors() {
    errors(TokenStream::new());
    errors(quote!(
        struct N {}
    ));
    errors(quote!(pub struct N: f64 {}));
    errors(quote!(f64:));
}

#[test]
fn valid_inputs_expand_to_valid_rust() {
    let chains = [
        "affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy",
        "affine(2, 3) -> sigmoid -> affine(3, 1) -> mse",
        "affine(2, 3) -> tanh -> affine(3, 2) -> softmax_with_loss",
        "affine(1, 1)",
        "affine(4, 2) -> relu",
        "affine(1_000, 0x10) -> affine(16, 0b11) -> relu() -> mse",
        "affine(2, 3,)",
        "affine(7usize, 3)",
        "input(1, 28, 28) -> relu -> mse",
        "input(2, 3, 4) -> sigmoid",
        "input(4) -> softmax",
        "affine(2, 3) -> leaky_relu -> affine(3, 2) -> softmax",
        "affine(2, 3) -> leaky_relu(alpha = 0.2) -> elu(0.5) -> mse",
        "affine(2, 3) -> leaky_relu(0) -> elu(1) -> mse",
        "affine(in = 2, out = 3) -> mse",
        "affine(2, out = 3) -> softmax -> mse",
    ];
    for item in [
        "#[gradcheck] struct X { affine(2, 3) -> mse }",
        "/// Doc.\n#[gradcheck] pub struct X: f64 { x = input(2); x -> affine(2, 2) -> softmax_cross_entropy }",
    ] {
        assert!(
            matches!(outcome(tokens(item)), Outcome::Code),
            "expected code for: {item}"
        );
    }
    for chain in chains {
        for input in both_forms(chain) {
            let shown = input.to_string();
            assert!(
                matches!(outcome(input), Outcome::Code),
                "expected code for: {shown}"
            );
        }
        for prefix in ["f64:", "f32:"] {
            let input = tokens(&format!("{prefix} {chain}"));
            assert!(matches!(outcome(input), Outcome::Code));
        }
    }
    let items = [
        "/// Docs. \n pub struct X: f64 { affine(2, 3) -> mse }",
        "#[derive(Debug)] pub(crate) struct X { affine(2, 3) }",
        "#[doc = 1] struct X { affine(2, 3) }",
    ];
    for item in items {
        assert!(matches!(outcome(tokens(item)), Outcome::Code));
    }
}

#[test]
fn a_long_chain_expands() {
    let mut chain = vec!["affine(8, 8)".to_owned()];
    for i in 0..198 {
        chain.push(if i % 2 == 0 { "relu" } else { "affine(8, 8)" }.to_owned());
    }
    chain.push("mse".to_owned());
    assert_eq!(chain.len(), 200);
    for input in both_forms(&chain.join(" -> ")) {
        assert!(matches!(outcome(input), Outcome::Code));
    }
}

#[test]
fn a_long_broken_chain_reports_every_mistake() {
    // 100 layers, 99 mismatches: affine(1, 2) -> affine(3, 4) -> ...
    let layers: Vec<String> = (1..=200)
        .step_by(2)
        .map(|i| format!("affine({i}, {})", i + 1))
        .collect();
    let chain = layers.join(" -> ");
    for input in both_forms(&chain) {
        let messages = errors(input);
        assert_eq!(messages.len(), 99, "{messages:#?}");
        assert_eq!(
            messages[98],
            "affine(199, 200) takes 199 features, but affine(197, 198) produces 198"
        );
    }
    // 200 unknown ops, every one reported.
    let chain = vec!["rleu"; 200].join(" -> ");
    assert_eq!(errors(tokens(&chain)).len(), 200);
}

#[test]
fn deep_nesting_gives_errors() {
    for depth in [1, 8, 64] {
        let open = "(".repeat(depth);
        let close = ")".repeat(depth);
        errors(tokens(&format!("{open}affine(2, 3){close}")));
        errors(tokens(&format!("affine({open}2{close}, 3)")));
        errors(tokens(&format!(
            "struct N {{ affine(2, 3) -> {open}relu{close} }}"
        )));
    }
}

/// The messages of an expansion that must be errors, without printing its input (the token
/// printer recurses into groups).
fn quiet_errors(input: TokenStream) -> Vec<String> {
    let output = catch_unwind(AssertUnwindSafe(|| crate::expand(input)))
        .unwrap_or_else(|_| panic!("network! panicked on a huge input"));
    only_compile_errors(&output).expect("only errors for a huge input")
}

#[test]
fn no_input_overflows_the_stack() {
    let nested = |depth: usize, inner: TokenStream| {
        let mut stream = inner;
        for _ in 0..depth {
            stream = TokenTree::Group(Group::new(Delimiter::Parenthesis, stream)).into();
        }
        stream
    };
    // 100,000 nested groups in a layer's arguments, as a statement, in an attribute, and
    // layers nested as arguments; 100,000 prefix operators and keywords, which syn's parser
    // recurses into without brackets.
    let deep = nested(100_000, quote!(2));
    let mut layers = quote!(2);
    for _ in 0..30_000 {
        layers = quote!(affine(2, #layers));
    }
    let minus: TokenStream = std::iter::repeat_n(quote!(-), 100_000).flatten().collect();
    let returns: TokenStream = std::iter::repeat_n(quote!(return), 100_000)
        .flatten()
        .collect();
    for (what, input) in [
        ("arguments", quote!(affine(#deep, 3) -> mse)),
        ("a statement", quote!(struct N { x = input(4); #deep })),
        (
            "an attribute",
            quote!(#[doc = #deep] struct N { affine(2, 3) -> mse }),
        ),
        (
            "a statement's attribute",
            quote!(struct N { #[doc = #deep] x = input(2); x -> mse }),
        ),
        ("layers in arguments", quote!(relu -> #layers)),
        ("prefix operators", quote!(affine(#minus 1, 3) -> mse)),
        ("keywords", quote!(affine(#returns 1, 3) -> mse)),
        (
            "prefix operators in an attribute",
            quote!(#[doc = #minus 1] struct N { affine(2, 3) -> mse }),
        ),
    ] {
        let messages = quiet_errors(input);
        assert!(!messages.is_empty(), "{what}: no message");
        println!("{what}: {}", messages[0]);
        assert!(
            messages.iter().all(|m| m.len() < 1000),
            "{what}: a message repeats the input: {}",
            &messages[0][..200]
        );
    }
}

#[test]
fn huge_literals_many_misses_and_long_alias_chains_take_linear_time() {
    // A 30,000-digit dimension: refused before syn converts it (which takes quadratic time).
    let digits = "9".repeat(30_000);
    let messages = quiet_errors(tokens(&format!("affine({digits}, 3) -> mse")));
    assert!(
        messages[0].contains("30000 characters"),
        "{}",
        &messages[0][..100]
    );
    // 20,000 undefined names, each near a defined one: every one reported, near names suggested
    // for the first few.
    let mut body = String::from("x = input(2); ");
    for i in 0..20_000 {
        body.push_str(&format!("v{i} = x -> relu; "));
    }
    let uses: Vec<String> = (0..20_000).map(|i| format!("w{i}")).collect();
    body.push_str(&format!("concat({}) -> mse", uses.join(", ")));
    let start = std::time::Instant::now();
    let messages = quiet_errors(tokens(&format!("struct N {{ {body} }}")));
    println!("20,000 misses: {:?}", start.elapsed());
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.starts_with("cannot find a value"))
            .count(),
        20_000
    );
    assert!(messages.iter().any(|m| m.contains("did you mean `v")));
    // A chain of 20,000 aliases, each resolved once.
    let mut body = String::from("x = input(2); a0 = x -> relu; ");
    for i in 1..20_000 {
        body.push_str(&format!("a{i} = a{}; ", i - 1));
    }
    let uses: Vec<String> = (0..20_000).map(|i| format!("a{i}")).collect();
    body.push_str(&format!("concat({}) -> mse", uses.join(", ")));
    let start = std::time::Instant::now();
    let outcome = outcome(tokens(&format!("struct N {{ {body} }}")));
    println!("20,000 aliases: {:?}", start.elapsed());
    assert!(matches!(outcome, Outcome::Code));
}

#[test]
fn a_chain_of_100_000_layers_is_checked() {
    // Too long to expand in a test; with a mistake at its end every stage but expand runs.
    let chain: TokenStream = std::iter::once(quote!(affine(8, 8)))
        .chain(std::iter::repeat_n(quote!(-> relu -> affine(8, 8)), 50_000))
        .chain(std::iter::once(quote!(-> affine(9, 1))))
        .flatten()
        .collect();
    let messages = quiet_errors(chain);
    assert_eq!(
        messages,
        ["affine(9, 1) takes 9 features, but affine(8, 8) produces 8"]
    );
}

#[test]
fn invisible_groups_are_seen_through() {
    // What `macro_rules!` passes on for `$n:expr`: the literal in a group without delimiters.
    let invisible =
        |tree: TokenTree| TokenTree::Group(Group::new(Delimiter::None, TokenStream::from(tree)));
    let two = invisible(Literal::usize_unsuffixed(2).into());
    let three = invisible(invisible(Literal::usize_unsuffixed(3).into()));
    assert!(matches!(
        outcome(quote!(affine(#two, #three) -> mse)),
        Outcome::Code
    ));
    // syn sees through invisible groups around a layer's name or an arrow too.
    let layer = TokenTree::Group(Group::new(Delimiter::None, quote!(relu)));
    assert!(matches!(
        outcome(quote!(affine(2, 3) -> #layer)),
        Outcome::Code
    ));
    let arrow = TokenTree::Group(Group::new(Delimiter::None, quote!(->)));
    outcome(quote!(affine(2, 3) #arrow relu));
    // Invisible groups holding anything else are not dimensions or layers.
    let soup = TokenTree::Group(Group::new(Delimiter::None, quote!(1 + 1)));
    errors(quote!(affine(#soup, 3)));
    let empty = TokenTree::Group(Group::new(Delimiter::None, TokenStream::new()));
    errors(quote!(affine(2, 3) -> #empty));
    errors(quote!(#empty));
    errors(quote!(affine(#empty, 3)));
}

#[test]
fn odd_punctuation_gives_errors() {
    // A lone `-` with joint spacing and nothing after it, and other punctuation soup.
    let lone = TokenStream::from(TokenTree::Punct(Punct::new('-', Spacing::Joint)));
    errors(lone.clone());
    errors(quote!(affine(2, 3) #lone));
    for c in [
        '-', '>', '<', ',', ';', ':', '#', '!', '=', '&', '|', '.', '?', '@', '^', '~',
    ] {
        let punct = TokenTree::Punct(Punct::new(c, Spacing::Alone));
        errors(quote!(#punct));
        errors(quote!(affine(2, 3) #punct relu));
        errors(quote!(affine(2, 3) -> #punct));
        errors(quote!(struct N { #punct }));
    }
}

#[test]
fn several_mistakes_are_all_reported() {
    let messages = errors(quote! {
        struct Net {
            affine(784, 0) -> rleu -> affine(50, 10) -> affine(20, 2) -> softmax_cross_entropy
        }
    });
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert!(messages[0].contains("is 0"));
    assert!(messages[1].contains("did you mean `relu`"));
    assert_eq!(
        messages[2],
        "affine(20, 2) takes 20 features, but affine(50, 10) produces 10"
    );
}

#[test]
fn messages_name_the_problem() {
    let first = |input: TokenStream| errors(input).remove(0);
    assert_eq!(
        first(quote!(affine(784, 50) -> affine(40, 10))),
        "affine(40, 10) takes 40 features, but affine(784, 50) produces 50"
    );
    assert_eq!(
        first(quote!(affine(784, 50) -> relu -> affine(40, 10))),
        "affine(40, 10) takes 40 features, but relu produces 50 (set by affine(784, 50))"
    );
    assert!(
        first(quote!(affine(2, 3) -> sofmax_cross_entropy)).contains("`softmax_cross_entropy`")
    );
    assert!(first(quote!(affine(2, 3) -> Softmax)).contains("`softmax`"));
    assert!(first(quote!(affine(2, 3) -> zzzzzzzz)).contains("the known layers are"));
    assert_eq!(
        first(quote!(affine(2, 3) relu)),
        "expected `->` between `affine(2, 3)` and `relu`"
    );
}

/// Prints the macro's time for chains of 100, 1,000 and 10,000 layers of mixed activations
/// (an affine layer, then ReLU, sigmoid or tanh in turn). It asserts nothing about time; run it
/// in release: `cargo test -p chainrule-macro --release macro_time -- --ignored --nocapture`.
#[test]
#[ignore]
fn macro_time_for_100_1000_and_10000_layers() {
    let layers = [
        "affine(8, 8)",
        "relu",
        "affine(8, 8)",
        "sigmoid",
        "affine(8, 8)",
        "tanh",
    ];
    for n in [100usize, 1_000, 10_000] {
        let chain: Vec<&str> = layers
            .iter()
            .copied()
            .cycle()
            .take(n)
            .chain(["mse"])
            .collect();
        let input = tokens(&chain.join(" -> "));
        let start = std::time::Instant::now();
        let output = crate::expand(input);
        let elapsed = start.elapsed();
        assert!(!output.to_string().contains("compile_error"));
        println!("{n:>6} layers: {elapsed:?}");
    }
}
