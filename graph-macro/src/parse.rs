//! Stage 1: parse a network description into a small AST that keeps every token's span.
//!
//! Grammar:
//!
//! ```text
//! input     := item | expr
//! item      := attribute* visibility `struct` IDENT elem? `{` body `}`
//! expr      := (IDENT `:`)? body             -- the optional IDENT is the element type
//! elem      := `:` IDENT                      -- `f32` (default) or `f64`
//! body      := statement (`;` statement)* `;`?
//! statement := attribute* (IDENT `=`)? chain  -- a chain, optionally named
//! chain     := layer (`->` layer)*
//! layer     := IDENT (`(` argument,* `)`)?
//! argument  := (IDENT `=`)? EXPR              -- in order, or named: `leaky_relu(alpha = 0.1)`
//! ```
//!
//! A single unnamed chain is the whole language of simple networks: `affine(784, 50) -> relu`.
//! Names, `input(width)` and merges such as `add(h, r)` make graphs. Which identifiers name values
//! and which name ops, and what arguments must be, are questions for the later stages.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, TokenStreamExt};
use syn::ext::IdentExt;
use syn::parse::discouraged::Speculative;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, Token, Visibility, braced, parenthesized, token};

use crate::errors::Errors;
use crate::graph::Skipped;

/// A whole `network!` invocation.
pub struct NetworkDef {
    /// Item form (`pub struct Name { ... }`) or expression form.
    pub form: Form,
    /// The element type, if written (`f32` or `f64`; `check` decides which are allowed).
    pub elem: Option<Ident>,
    /// The statements that parsed, in the order written.
    pub body: Vec<Statement>,
    /// What the statements that did not parse defined and mentioned.
    pub skipped: Skipped,
    /// The mistakes in statements that did not parse: parsing goes on after each at the next `;`.
    pub errors: Errors,
}

/// `#[attrs] name = chain`, or a bare chain.
pub struct Statement {
    /// Attributes: `#[grad]` on an input asks for its gradient.
    pub attrs: Vec<Attribute>,
    /// The name the chain's result is bound to.
    pub name: Option<Ident>,
    /// The layers.
    pub chain: Chain,
}

/// How the network was written.
pub enum Form {
    /// `#[attrs] vis struct Name: elem { chain }`: defines a struct.
    Item {
        /// The attributes passed on to the struct (doc comments among them).
        attrs: Vec<Attribute>,
        vis: Visibility,
        ident: Ident,
        /// `#[gradcheck]`, if written: generate a test that checks the network's gradients.
        gradcheck: Option<Box<Attribute>>,
        /// The description between the braces, as written (for the gradient check's twin).
        body: TokenStream,
    },
    /// `network!(chain)`: evaluates to a network value.
    Expr,
}

/// Layers joined by arrows.
pub struct Chain {
    /// The layers in order; never empty after a successful parse.
    pub layers: Vec<Layer>,
}

/// One layer, e.g. `affine(784, 50)` or `relu`.
pub struct Layer {
    /// The op's name as written.
    pub name: Ident,
    /// The parentheses and the arguments inside, if written.
    pub args: Option<(token::Paren, Punctuated<Argument, Token![,]>)>,
}

/// One argument of a layer: `784`, `0.01`, a value's name (`add(h, r)`), or a named one
/// (`alpha = 0.1`; the name may be a keyword, as in `in = 784`).
pub struct Argument {
    pub name: Option<(Ident, Token![=])>,
    pub value: Expr,
}

impl Parse for Argument {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let named = input.peek(Ident::peek_any)
            && input.peek2(Token![=])
            && !input.peek2(Token![==])
            && !input.peek2(Token![=>]);
        if !named {
            return Ok(Argument {
                name: None,
                value: input.parse()?,
            });
        }
        let name = input.call(Ident::parse_any)?;
        let equals: Token![=] = input.parse()?;
        if input.is_empty() || input.peek(Token![,]) {
            return Err(syn::Error::new_spanned(
                equals,
                format!("expected a value after `{name} =`"),
            ));
        }
        Ok(Argument {
            name: Some((name, equals)),
            value: input.parse()?,
        })
    }
}

impl ToTokens for Argument {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        if let Some((name, equals)) = &self.name {
            name.to_tokens(tokens);
            equals.to_tokens(tokens);
        }
        self.value.to_tokens(tokens);
    }
}

impl Parse for NetworkDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Token![#]) || input.peek(Token![pub]) || input.peek(Token![struct]) {
            parse_item(input)
        } else {
            parse_expr(input)
        }
    }
}

fn parse_item(input: ParseStream) -> syn::Result<NetworkDef> {
    let mut attrs = input.call(attributes)?;
    let gradcheck = attrs
        .iter()
        .position(|attr| attr.path().is_ident("gradcheck"))
        .map(|index| Box::new(attrs.remove(index)));
    if let Some(again) = attrs.iter().find(|attr| attr.path().is_ident("gradcheck")) {
        return Err(syn::Error::new_spanned(
            again,
            "`#[gradcheck]` is written twice",
        ));
    }
    if let Some(attr) = &gradcheck
        && !matches!(attr.meta, syn::Meta::Path(_))
    {
        return Err(syn::Error::new_spanned(
            attr,
            "`#[gradcheck]` takes no arguments",
        ));
    }
    let vis: Visibility = input.parse()?;
    if !input.peek(Token![struct]) {
        return Err(expected(
            input,
            "expected `struct` and the network's name, e.g. `struct Net { affine(784, 10) -> softmax_cross_entropy }`",
        ));
    }
    input.parse::<Token![struct]>()?;
    if !input.peek(Ident) {
        return Err(expected(
            input,
            "expected the network's name after `struct`",
        ));
    }
    let ident: Ident = input.parse()?;
    let elem = if input.peek(Token![:]) {
        input.parse::<Token![:]>()?;
        if !input.peek(Ident) {
            return Err(expected(
                input,
                &format!("expected the element type `f32` or `f64` after `{ident}:`"),
            ));
        }
        Some(input.parse()?)
    } else {
        None
    };
    if !input.peek(token::Brace) {
        return Err(expected(
            input,
            &format!(
                "expected `{{` with the layers of `{ident}`, e.g. `struct {ident} {{ affine(784, 10) -> softmax_cross_entropy }}`"
            ),
        ));
    }
    let body;
    let braces = braced!(body in input);
    let tokens: TokenStream = body.fork().parse()?;
    let (body, skipped, errors) = parse_body(&body, braces.span.join(), Some(&ident))?;
    if !input.is_empty() {
        return Err(input.error(format!(
            "unexpected {} after the layers of `{ident}`: the network ends with its `}}`",
            next_token(input)
        )));
    }
    Ok(NetworkDef {
        form: Form::Item {
            attrs,
            vis,
            ident,
            gradcheck,
            body: tokens,
        },
        elem,
        body,
        skipped,
        errors,
    })
}

fn parse_expr(input: ParseStream) -> syn::Result<NetworkDef> {
    let elem = if input.peek(Ident) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
        let elem: Ident = input.parse()?;
        input.parse::<Token![:]>()?;
        Some(elem)
    } else {
        None
    };
    let (body, skipped, errors) = parse_body(input, Span::call_site(), None)?;
    Ok(NetworkDef {
        form: Form::Expr,
        elem,
        body,
        skipped,
        errors,
    })
}

/// `body := statement (; statement)* ;?`, consuming all of `input`. `whole` spans the description,
/// for the empty-network error; `item` is the struct's name in the item form. A statement that
/// does not parse is skipped up to the next `;`, its mistake collected, and parsing goes on.
fn parse_body(
    input: ParseStream,
    whole: Span,
    item: Option<&Ident>,
) -> syn::Result<(Vec<Statement>, Skipped, Errors)> {
    if input.is_empty() {
        return Err(syn::Error::new(
            whole,
            "this network has no layers: write at least one, e.g. `affine(784, 10) -> softmax_cross_entropy`",
        ));
    }
    let mut body = Vec::new();
    let mut skipped = Skipped::default();
    let mut errors = Errors::default();
    // Keywords rejected as names: a statement that starts from one has its error already.
    let mut keywords: Vec<String> = Vec::new();
    while !input.is_empty() {
        let fork = input.fork();
        match parse_statement(&fork, item) {
            Ok(statement) => {
                input.advance_to(&fork);
                body.push(statement);
            }
            Err(error) => {
                match leading_keyword(input) {
                    Some((keyword, true)) => keywords.push(keyword),
                    Some((keyword, false)) if keywords.contains(&keyword) => {
                        skip_statement(input, &mut skipped);
                        continue;
                    }
                    _ => {}
                }
                errors.push(error);
                skip_statement(input, &mut skipped);
                continue;
            }
        }
        if !input.is_empty() {
            input.parse::<Token![;]>()?;
        }
    }
    Ok((body, skipped, errors))
}

/// The keyword a statement starts with (after its attributes), and whether `=` follows it.
fn leading_keyword(input: ParseStream) -> Option<(String, bool)> {
    let fork = input.fork();
    fork.call(attributes).ok()?;
    if fork.peek(Ident) || !fork.peek(Ident::peek_any) {
        return None;
    }
    let keyword = fork.call(Ident::parse_any).ok()?;
    Some((
        keyword.to_string(),
        fork.peek(Token![=]) && !fork.peek(Token![==]),
    ))
}

/// Skips the tokens of a statement that did not parse, up to and including the next `;`, noting
/// the names it defines (`name =`) and every identifier it mentions.
fn skip_statement(input: ParseStream, skipped: &mut Skipped) {
    use proc_macro2::{Spacing, TokenTree};
    fn mention(stream: TokenStream, skipped: &mut Skipped) {
        // Iterative, so that deeply nested groups cannot overflow the stack.
        let mut pending = vec![stream];
        while let Some(stream) = pending.pop() {
            for tree in stream {
                match tree {
                    TokenTree::Ident(ident) => {
                        skipped.mentioned.insert(ident.to_string());
                    }
                    TokenTree::Group(group) => pending.push(group.stream()),
                    _ => {}
                }
            }
        }
    }
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        let mut previous: Option<Ident> = None;
        while let Some((tree, next)) = rest.token_tree() {
            rest = next;
            match &tree {
                TokenTree::Punct(punct) if punct.as_char() == ';' => break,
                TokenTree::Punct(punct)
                    if punct.as_char() == '=' && punct.spacing() == Spacing::Alone =>
                {
                    skipped.defined.extend(previous.take());
                }
                _ => {}
            }
            previous = match &tree {
                TokenTree::Ident(ident) => Some(ident.clone()),
                _ => None,
            };
            mention(tree.into(), skipped);
        }
        Ok(((), rest))
    });
}

/// `statement := attribute* (IDENT =)? chain`, up to its `;` or the end of `input`.
fn parse_statement(input: ParseStream, item: Option<&Ident>) -> syn::Result<Statement> {
    {
        let attrs = input.call(attributes)?;
        if !input.peek(Ident) && input.peek(Ident::peek_any) && input.peek2(Token![=]) {
            let keyword = input.call(Ident::parse_any)?;
            return Err(syn::Error::new_spanned(
                &keyword,
                format!("`{keyword}` is a Rust keyword; call this value something else"),
            ));
        }
        let name = if input.peek(Ident)
            && input.peek2(Token![=])
            && !input.peek2(Token![==])
            && !input.peek2(Token![=>])
        {
            let name: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            Some(name)
        } else {
            None
        };
        let chain = parse_chain(input, item)?;
        Ok(Statement { attrs, name, chain })
    }
}

/// `chain := layer (-> layer)*`, up to a `;` or the end of `input`. `item` is the struct's name in
/// the item form.
fn parse_chain(input: ParseStream, item: Option<&Ident>) -> syn::Result<Chain> {
    let mut layers = vec![input.parse::<Layer>()?];
    while !input.is_empty() && !input.peek(Token![;]) {
        if input.peek(Token![->]) {
            let arrow: Token![->] = input.parse()?;
            if input.is_empty() || input.peek(Token![;]) {
                return Err(syn::Error::new_spanned(
                    arrow,
                    "this `->` leads nowhere: write a layer after it, or remove it",
                ));
            }
            layers.push(input.parse()?);
        } else {
            let previous = &layers[layers.len() - 1];
            let elem_like = layers.len() == 1
                && previous.args.is_none()
                && (previous.name == "f32" || previous.name == "f64");
            return Err(missing_arrow(input, previous, elem_like, item));
        }
    }
    Ok(Chain { layers })
}

impl Parse for Layer {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Token![->]) {
            let arrow: Token![->] = input.fork().parse()?;
            return Err(syn::Error::new_spanned(
                arrow,
                "expected a layer before this `->`",
            ));
        }
        if !input.peek(Ident) {
            return Err(expected(
                input,
                "expected a layer, such as `affine(784, 50)` or `relu`",
            ));
        }
        let name: Ident = input.parse()?;
        let args = if input.peek(token::Paren) {
            let inner;
            let paren = parenthesized!(inner in input);
            let arguments: TokenStream = inner.fork().parse()?;
            if let Some(literal) = long_literal(arguments.clone()) {
                return Err(syn::Error::new(
                    literal.span(),
                    format!(
                        "`{name}` has an argument of {} characters; no argument of a layer needs \
                         more than {MAX_LITERAL}",
                        literal.to_string().chars().count()
                    ),
                ));
            }
            if let Some(span) = long_argument(arguments) {
                return Err(syn::Error::new(
                    span,
                    format!(
                        "an argument of `{name}` runs to more than {MAX_TOKENS} tokens; a layer's \
                         arguments are numbers, names of values, and `name = number`"
                    ),
                ));
            }
            let args = Punctuated::parse_terminated(&inner).map_err(|error| {
                syn::Error::new(
                    error.span(),
                    format!("{error} in the arguments of `{name}`"),
                )
            })?;
            Some((paren, args))
        } else {
            None
        };
        Ok(Layer { name, args })
    }
}

/// The error for what follows `previous` when it is not `->`: a missing arrow, arguments in the
/// wrong brackets, an element type written where it does not go, or a stray token. `elem_like`:
/// `previous` is the first layer and is named like an element type (`f64`).
fn missing_arrow(
    input: ParseStream,
    previous: &Layer,
    elem_like: bool,
    item: Option<&Ident>,
) -> syn::Error {
    let previous_text = previous.describe();
    if previous.args.is_none()
        && let Some((proc_macro2::TokenTree::Group(group), _)) = input.cursor().token_tree()
        && matches!(
            group.delimiter(),
            proc_macro2::Delimiter::Bracket | proc_macro2::Delimiter::Brace
        )
    {
        let args = Punctuated::<Argument, Token![,]>::parse_terminated
            .parse2(group.stream())
            .map(|args| {
                let args: Vec<String> = args
                    .iter()
                    .map(|arg| arg.to_token_stream().to_string())
                    .collect();
                args.join(", ")
            })
            .unwrap_or_else(|_| "...".to_owned());
        return syn::Error::new(
            group.span(),
            format!(
                "a layer's arguments go in parentheses: `{}({args})`",
                previous.name
            ),
        );
    }
    if elem_like && let Some(name) = item {
        return syn::Error::new_spanned(
            &previous.name,
            format!(
                "the element type goes after the network's name: `struct {name}: {previous_text} {{ ... }}`"
            ),
        );
    }
    let next_is_merge = input.fork().parse::<Ident>().is_ok_and(|next| {
        crate::ops::lookup(&next.to_string()).is_some_and(|op| op.takes_values() || op.is_source())
    });
    if input.peek(Token![#]) || next_is_merge || (input.peek(Ident) && input.peek2(Token![=])) {
        return input.error(format!(
            "expected `;` after `{previous_text}`: statements are separated by `;`"
        ));
    }
    if input.peek(Ident) {
        if elem_like {
            return input.error(format!(
                "expected `:` after the element type: `{previous_text}: ...`"
            ));
        }
        let next = input.fork().parse::<Layer>().map(|layer| layer.describe());
        let next = next.unwrap_or_else(|_| "this layer".to_owned());
        return input.error(format!(
            "expected `->` between `{previous_text}` and `{next}`"
        ));
    }
    input.error(format!(
        "unexpected {} after `{previous_text}`: layers are joined with `->`",
        next_token(input)
    ))
}

/// The most tokens (counting those inside brackets) that the arguments of one layer, or one
/// attribute, may have. Far more than any real layer needs; it bounds how deep syn's parser, which
/// recurses into nested expressions, can go, so that no input overflows the stack.
const MAX_TOKENS: usize = 256;

/// The longest literal a layer's argument may be: syn converts number literals in time that grows
/// with the square of their length.
const MAX_LITERAL: usize = 64;

/// A literal in `stream` (at most [`MAX_TOKENS`] deep in it) longer than [`MAX_LITERAL`].
fn long_literal(stream: TokenStream) -> Option<proc_macro2::Literal> {
    let mut pending = vec![stream];
    let mut seen = 0;
    while let Some(stream) = pending.pop() {
        for tree in stream {
            seen += 1;
            if seen > MAX_TOKENS {
                return None;
            }
            match tree {
                proc_macro2::TokenTree::Literal(literal)
                    if literal.to_string().len() > MAX_LITERAL =>
                {
                    return Some(literal);
                }
                proc_macro2::TokenTree::Group(group) => pending.push(group.stream()),
                _ => {}
            }
        }
    }
    None
}

/// Where an argument (the tokens between two commas of `arguments`) longer than [`MAX_TOKENS`]
/// starts, if there is one.
fn long_argument(arguments: TokenStream) -> Option<Span> {
    let mut argument = TokenStream::new();
    let mut start = None;
    for tree in
        arguments
            .into_iter()
            .chain([proc_macro2::TokenTree::Punct(proc_macro2::Punct::new(
                ',',
                proc_macro2::Spacing::Alone,
            ))])
    {
        if let proc_macro2::TokenTree::Punct(punct) = &tree
            && punct.as_char() == ','
        {
            if too_long(std::mem::take(&mut argument)) {
                return start;
            }
            start = None;
            continue;
        }
        start.get_or_insert(tree.span());
        argument.extend([tree]);
    }
    None
}

/// Whether `stream` has more than [`MAX_TOKENS`] tokens, counted without recursion.
fn too_long(stream: TokenStream) -> bool {
    let mut count = 0;
    let mut pending = vec![stream];
    while let Some(stream) = pending.pop() {
        for tree in stream {
            count += 1;
            if count > MAX_TOKENS {
                return true;
            }
            if let proc_macro2::TokenTree::Group(group) = tree {
                pending.push(group.stream());
            }
        }
    }
    false
}

/// `#[...]*`, each attribute's tokens checked against [`MAX_TOKENS`] before syn parses it.
fn attributes(input: ParseStream) -> syn::Result<Vec<Attribute>> {
    let mut cursor = input.cursor();
    while let Some((punct, rest)) = cursor.punct()
        && punct.as_char() == '#'
    {
        let rest = rest
            .punct()
            .filter(|(bang, _)| bang.as_char() == '!')
            .map_or(rest, |(_, rest)| rest);
        let Some((proc_macro2::TokenTree::Group(group), after)) = rest.token_tree() else {
            break;
        };
        if too_long(group.stream()) {
            return Err(syn::Error::new(
                group.span(),
                format!("this attribute runs to more than {MAX_TOKENS} tokens"),
            ));
        }
        cursor = after;
    }
    input.call(Attribute::parse_outer)
}

/// An error at the next token: `message` and what was found instead. At the end of the input syn
/// itself says so ("unexpected end of input, ...").
fn expected(input: ParseStream, message: &str) -> syn::Error {
    if input.is_empty() {
        input.error(message)
    } else {
        input.error(format!("{message}, found {}", next_token(input)))
    }
}

/// The next token, for a message: `` `,` ``, `` `->` ``, `` `(...)` ``, `` `'a` ``, or `the end of
/// the input`.
fn next_token(input: ParseStream) -> String {
    use proc_macro2::{Delimiter, Spacing, TokenTree};
    let cursor = input.cursor();
    if let Some((lifetime, _)) = cursor.lifetime() {
        return format!("`{lifetime}`");
    }
    if let Some((punct, mut rest)) = cursor.punct() {
        // A multi-character operator is one token to the reader: `=>`, `::`, `<-`.
        let mut text = punct.as_char().to_string();
        let mut spacing = punct.spacing();
        while spacing == Spacing::Joint
            && let Some((next, after)) = rest.punct()
        {
            text.push(next.as_char());
            spacing = next.spacing();
            rest = after;
        }
        return format!("`{text}`");
    }
    match cursor.token_tree() {
        None => "the end of the input".to_owned(),
        Some((TokenTree::Group(group), _)) => match group.delimiter() {
            Delimiter::Parenthesis => "`(...)`".to_owned(),
            Delimiter::Bracket => "`[...]`".to_owned(),
            Delimiter::Brace => "`{...}`".to_owned(),
            Delimiter::None => format!("`{}`", group.stream()),
        },
        Some((tree, _)) => format!("`{tree}`"),
    }
}

impl Layer {
    /// The arguments as written (empty if there were no parentheses).
    pub fn arguments(&self) -> impl ExactSizeIterator<Item = &Argument> {
        self.args
            .iter()
            .flat_map(|(_, args)| args.iter())
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The layer as written, normalised: `affine(784, 50)`, `relu`.
    pub fn describe(&self) -> String {
        match &self.args {
            None => self.name.to_string(),
            Some((_, args)) => {
                let args: Vec<String> = args
                    .iter()
                    .map(|arg| arg.to_token_stream().to_string())
                    .collect();
                format!("{}({})", self.name, args.join(", "))
            }
        }
    }
}

impl ToTokens for Layer {
    /// Prints the layer back, so that an error spanned with it covers the whole layer.
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.append(self.name.clone());
        if let Some((paren, args)) = &self.args {
            paren.surround(tokens, |tokens| args.to_tokens(tokens));
        }
    }
}
