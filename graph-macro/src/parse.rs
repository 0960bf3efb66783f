//! Stage 1: parse a network description into a small AST that keeps every token's span.
//!
//! Grammar:
//!
//! ```text
//! input  := item | expr
//! item   := attribute* visibility `struct` IDENT elem? `{` chain `}`
//! expr   := (IDENT `:`)? chain               -- the optional IDENT is the element type
//! elem   := `:` IDENT                         -- `f32` (default) or `f64`
//! chain  := layer (`->` layer)*
//! layer  := IDENT (`(` argument,* `)`)?
//! ```
//!
//! Arguments are kept as expressions; what they must be is a question for `check`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, TokenStreamExt};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, Token, Visibility, braced, parenthesized, token};

/// A whole `network!` invocation.
pub struct NetworkDef {
    /// Item form (`pub struct Name { ... }`) or expression form.
    pub form: Form,
    /// The element type, if written (`f32` or `f64`; `check` decides which are allowed).
    pub elem: Option<Ident>,
    /// The layers, in the order written.
    pub chain: Chain,
}

/// How the network was written.
pub enum Form {
    /// `#[attrs] vis struct Name: elem { chain }`: defines a struct.
    Item {
        attrs: Vec<Attribute>,
        vis: Visibility,
        ident: Ident,
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
    pub args: Option<(token::Paren, Punctuated<Expr, Token![,]>)>,
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
    let attrs = input.call(Attribute::parse_outer)?;
    let vis: Visibility = input.parse()?;
    input.parse::<Token![struct]>()?;
    let ident: Ident = input.parse()?;
    let elem = if input.peek(Token![:]) {
        input.parse::<Token![:]>()?;
        Some(input.parse()?)
    } else {
        None
    };
    if !input.peek(token::Brace) {
        return Err(input.error(format!(
            "expected `{{` with the layers of `{ident}`, e.g. `struct {ident} {{ affine(784, 10) -> softmax_cross_entropy }}`"
        )));
    }
    let body;
    let braces = braced!(body in input);
    let chain = parse_chain(&body, braces.span.join())?;
    if !input.is_empty() {
        return Err(input.error("unexpected tokens after the network's `{ ... }`"));
    }
    Ok(NetworkDef {
        form: Form::Item { attrs, vis, ident },
        elem,
        chain,
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
    let chain = parse_chain(input, Span::call_site())?;
    Ok(NetworkDef {
        form: Form::Expr,
        elem,
        chain,
    })
}

/// `chain := layer (-> layer)*`, consuming all of `input`. `whole` spans the description, for the
/// empty-network error.
fn parse_chain(input: ParseStream, whole: Span) -> syn::Result<Chain> {
    if input.is_empty() {
        return Err(syn::Error::new(
            whole,
            "this network has no layers: write at least one, e.g. `affine(784, 10) -> softmax_cross_entropy`",
        ));
    }
    let mut layers = vec![input.parse::<Layer>()?];
    while !input.is_empty() {
        if input.peek(Token![->]) {
            let arrow: Token![->] = input.parse()?;
            if input.is_empty() {
                return Err(syn::Error::new_spanned(
                    arrow,
                    "this `->` leads nowhere: write a layer after it, or remove it",
                ));
            }
            layers.push(input.parse()?);
        } else if input.peek(Ident) {
            let previous = &layers[layers.len() - 1].name;
            return Err(input.error(format!("expected `->` between `{previous}` and this layer")));
        } else {
            return Err(input
                .error("unexpected token: expected `->` and a layer, or the end of the network"));
        }
    }
    Ok(Chain { layers })
}

impl Parse for Layer {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Token![->]) {
            return Err(input.error("expected a layer before this `->`"));
        }
        if !input.peek(Ident) {
            return Err(input.error("expected a layer, such as `affine(784, 50)` or `relu`"));
        }
        let name: Ident = input.parse()?;
        let args = if input.peek(token::Paren) {
            let inner;
            let paren = parenthesized!(inner in input);
            Some((paren, Punctuated::parse_terminated(&inner)?))
        } else {
            None
        };
        Ok(Layer { name, args })
    }
}

impl Layer {
    /// The arguments as written (empty if there were no parentheses).
    pub fn arguments(&self) -> impl ExactSizeIterator<Item = &Expr> {
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
