//! The `network!` procedural macro of chainrule.
//!
//! The pipeline, one module per stage, each with its own types:
//! `parse` (syn AST with spans) → `graph` (petgraph DAG, topological order) → `check`
//! (op table lookup, arguments, shape inference) → `expand` (the generated Rust code).
//! `ops` is the table of operations all stages read. See ARCHITECTURE.md.

use proc_macro2::TokenStream;

mod check;
mod dot;
mod expand;
mod graph;
mod ops;
mod parse;

/// Compiles a network description into a struct with specialised forward and backward code.
///
/// See the `chainrule` crate for the language and examples.
#[proc_macro]
pub fn network(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into()).into()
}

/// The whole pipeline on token streams: what the macro does, callable without a compiler session
/// (the expansion snapshots use it).
fn expand(input: TokenStream) -> TokenStream {
    let expression = !looks_like_item(&input);
    match pipeline(input) {
        Ok(tokens) => tokens,
        // In expression position several `compile_error!`s need a block around them. A single
        // one goes bare: that is valid in item and expression position alike, so the message
        // still shows if the expression form is misused as an item (or vice versa).
        Err(error) if expression && (&error).into_iter().nth(1).is_some() => {
            let errors = error.to_compile_error();
            quote::quote!({ #errors })
        }
        Err(error) => error.to_compile_error(),
    }
}

fn pipeline(input: TokenStream) -> syn::Result<TokenStream> {
    let def: parse::NetworkDef = syn::parse2(input)?;
    let graph = graph::build(&def.body)?;
    let checked = check::check(&def, &graph)?;
    Ok(expand::expand(&def, &checked))
}

/// Whether the input starts like the item form (`#[...]`, `pub`, `struct`).
fn looks_like_item(input: &TokenStream) -> bool {
    match input.clone().into_iter().next() {
        Some(proc_macro2::TokenTree::Punct(p)) => p.as_char() == '#',
        Some(proc_macro2::TokenTree::Ident(i)) => i == "pub" || i == "struct",
        _ => false,
    }
}

#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;
