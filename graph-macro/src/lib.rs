//! The `network!` procedural macro of chainrule.
//!
//! The pipeline, one module per stage, each with its own types:
//! `parse` (syn AST with spans) → `graph` (petgraph DAG, topological order) → `check`
//! (op table lookup, arguments, shape inference) → `plan` (fusions, gradient modes, buffers,
//! costs) → `expand` (the generated Rust code, one module per kernel family). `ops` is the table
//! of operations all stages read; mistakes from every stage are collected and reported together.
//! See ARCHITECTURE.md.

use proc_macro2::TokenStream;

mod check;
mod dot;
mod errors;
mod expand;
mod graph;
mod ops;
mod parse;
mod plan;
mod shape;

/// Compiles a network description into a struct with specialised forward and backward code.
///
/// See the `chainrule` crate for the language and examples.
#[proc_macro]
pub fn network(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into()).into()
}

/// Every op name of the language, as `&[&str]` in the table's order: for the tests that check
/// each op is covered (the differential test's reference evaluator). Not part of the API.
#[doc(hidden)]
#[proc_macro]
pub fn __op_names(_: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let names = ops::OPS.iter().map(|op| op.name);
    quote::quote!(&[#(#names),*]).into()
}

/// The whole pipeline on token streams: what the macro does, callable without a compiler session
/// (the expansion snapshots use it).
fn expand(input: TokenStream) -> TokenStream {
    let expression = !looks_like_item(&input);
    if let Some(span) = nested_too_deep(&input) {
        let error = syn::Error::new(
            span,
            format!(
                "brackets nested more than {MAX_DEPTH} deep: `network!` reads at most \
                 {MAX_DEPTH} levels (a network needs a handful)"
            ),
        );
        return error.to_compile_error();
    }
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

/// Every stage in turn, each going on after the mistakes of the one before where it can, so
/// that all of them are reported at once; code only when there are none.
fn pipeline(input: TokenStream) -> syn::Result<TokenStream> {
    let mut def: parse::NetworkDef = syn::parse2(input)?;
    let mut errors = std::mem::take(&mut def.errors);
    if def.body.is_empty() {
        errors.finish()?;
    }
    let graph = graph::build(&def.body, &def.skipped, &mut errors);
    let checked = graph.and_then(|graph| check::check(&def, &graph, &mut errors));
    let planned = checked.and_then(|checked| {
        let plan = plan::plan(&checked, &mut errors)?;
        Some((checked, plan))
    });
    errors.finish()?;
    let Some((checked, plan)) = planned else {
        return Err(syn::Error::new(
            proc_macro2::Span::call_site(),
            "internal error in `network!`: no code and no mistake found",
        ));
    };
    Ok(expand::expand(&def, &checked, &plan))
}

/// The deepest nesting of brackets the macro reads. syn's parser recurses into every group, so an
/// input nested deeper than the compiler's stack allows would crash the compiler; no network
/// needs more than a few levels.
const MAX_DEPTH: usize = 64;

/// The span of a group nested deeper than [`MAX_DEPTH`], if there is one; found without recursion.
fn nested_too_deep(input: &TokenStream) -> Option<proc_macro2::Span> {
    let mut pending = vec![(input.clone(), 0)];
    while let Some((stream, depth)) = pending.pop() {
        for tree in stream {
            if let proc_macro2::TokenTree::Group(group) = tree {
                if depth == MAX_DEPTH {
                    return Some(group.span());
                }
                pending.push((group.stream(), depth + 1));
            }
        }
    }
    None
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
