//! Stage 5: the generated code. The only stage that builds Rust syntax; it prints what `check`
//! and `plan` decided.
//!
//! For each network it emits a struct (parameters public, value and gradient buffers private),
//! one small method per node and pass whose doc comment names the source layer and the math it
//! does, `run_forward`/`run_backward` that call them in topological and reverse topological order,
//! and impls of the runtime's `Network` and (with a loss) `Trainable` traits. Each calling
//! convention of the runtime's kernels is a [`Family`] in a module of its own.

mod activation;
mod affine;
mod concat;
mod conv;
mod graph;
mod loss;
mod merge;
mod norm;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote};
use syn::Ident;

use crate::check::{Checked, ResolvedInit};
use crate::dot;
use crate::ops::Kernels;
use crate::parse::{Form, NetworkDef};
use crate::plan::{GradMode, Plan};

/// One calling convention of the runtime's kernels: how a node of it is written out.
trait Family {
    /// The forward method of `node`, or `None` if it has none.
    fn forward(&self, g: &Generator, node: usize) -> Option<Method>;
    /// The backward method of `node`, or `None` when nothing upstream needs a gradient from it.
    fn backward(&self, g: &Generator, node: usize) -> Option<Method>;
}

/// A generated method: the math it does (for its doc comment), a note after it, and its body.
struct Method {
    math: &'static str,
    note: String,
    body: TokenStream,
}

/// The family of an op's kernels.
fn family(kernels: &Kernels) -> Option<&dyn Family> {
    match kernels {
        Kernels::Affine(kernels) => Some(kernels),
        Kernels::Activation(kernels) => Some(kernels),
        Kernels::Merge(kernels) => Some(kernels),
        Kernels::Concat(kernels) => Some(kernels),
        Kernels::Loss(kernels) => Some(kernels),
        Kernels::Conv(kernels) => Some(kernels),
        Kernels::Pool(kernels) => Some(kernels),
        Kernels::Norm(kernels) => Some(kernels),
        Kernels::Dropout(kernels) => Some(kernels),
        Kernels::Source => None,
    }
}

pub fn expand(def: &NetworkDef, net: &Checked, plan: &Plan) -> TokenStream {
    let ty = match &def.form {
        Form::Item { ident, .. } => ident.clone(),
        Form::Expr => Ident::new("Network", Span::mixed_site()),
    };
    let generator = Generator {
        net,
        plan,
        ty: &ty,
        reads_batch: Cell::new(false),
        math_docs: RefCell::default(),
    };
    let (fields, rest) = generator.generate();
    match &def.form {
        Form::Item {
            attrs,
            vis,
            gradcheck,
            body,
            ..
        } => {
            let gradcheck = gradcheck
                .as_ref()
                .and_then(|_| generator.gradcheck_test(body));
            let mut item = braced(quote!(#(#attrs)* #vis struct #ty), fields);
            // The impls go in an anonymous scope of their own, where the short names of
            // `prelude` cannot meet the user's.
            let mut scope = prelude();
            scope.extend(rest);
            item.extend(braced(quote!(const _: () =), scope));
            item.extend(quote!(;));
            item.extend(gradcheck);
            item
        }
        Form::Expr => {
            let mut block = braced(quote!(struct #ty), fields);
            block.extend(prelude());
            block.extend(rest);
            block.extend(quote!(<#ty as ::core::default::Default>::default()));
            braced(TokenStream::new(), block)
        }
    }
}

/// The names the generated impls use often, imported in the scope around them: a network's
/// expansion time is mostly its tokens, and `kernels::relu_forward` is a third of
/// `::chainrule::kernels::relu_forward`'s.
fn prelude() -> TokenStream {
    quote! {
        #[allow(unused_imports)]
        use ::chainrule::{
            __private as private,
            kernels::{self, GradMode},
            ndarray::{Array2, ArrayView2, ArrayViewMut2},
        };
        #[allow(unused_imports)]
        use ::core::{
            option::Option::{self, None, Some},
            result::Result::{Err, Ok},
        };
    }
}

struct Generator<'a> {
    net: &'a Checked<'a>,
    plan: &'a Plan,
    ty: &'a Ident,
    /// Set when generated code reads the batch (an input value): the method being generated
    /// then takes the batch as a parameter.
    reads_batch: Cell<bool>,
    /// Each op's math as a doc line, made once: escaping a string into a literal is much of a
    /// large network's expansion time.
    math_docs: RefCell<HashMap<&'static str, Literal>>,
}

impl quote::ToTokens for GradMode {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(match self {
            GradMode::Set => quote!(GradMode::Set),
            GradMode::Add => quote!(GradMode::Add),
        });
    }
}

impl Generator<'_> {
    /// The struct's fields, and everything after the struct.
    fn generate(&self) -> (TokenStream, TokenStream) {
        let net = self.net;
        let plan = self.plan;
        let ty = self.ty;
        let elem = &net.elem;
        let name = &net.name;

        // Parameters: one public field each.
        let mut param_fields = Vec::new();
        let mut param_news = Vec::new();
        let mut param_names = Vec::new();
        let mut param_inits = Vec::new();
        let mut matrices = Vec::new();
        for (index, node) in net.nodes.iter().enumerate() {
            for param in &node.params {
                let field = self.param_field(index, param.name);
                if param.shape.len() == 2 {
                    matrices.push(field.clone());
                }
                let param_name = format!("{}.{}", node.ident, param.name);
                let rank = format_ident!("Ix{}", param.shape.len());
                let dims: Vec<String> = param.shape.iter().map(usize::to_string).collect();
                let doc = format!(
                    " `{}`'s {}: {} (`{param_name}`).",
                    node.layer.describe(),
                    param.name,
                    dims.join(" × ")
                );
                let shape = param.shape.iter().copied().map(lit);
                param_fields.push(moved_quote! {
                    #[doc = #doc]
                    pub #field: ::chainrule::Param<#elem, ::chainrule::ndarray::#rank>
                });
                param_news.push(
                    moved_quote! { #field: ::chainrule::Param::zeros(#param_name, (#(#shape,)*)) },
                );
                let how = match param.init {
                    ResolvedInit::Weight { fan_in } => {
                        let fan_in = lit(fan_in);
                        quote!(::chainrule::ParamInit::Weight { fan_in: #fan_in })
                    }
                    ResolvedInit::Zero => quote!(::chainrule::ParamInit::Zero),
                    ResolvedInit::One => quote!(::chainrule::ParamInit::One),
                };
                param_inits.push(moved_quote! { self.#field.init(#how, init, &mut rng); });
                param_names.push((param_name, field));
            }
        }
        // Weight matrices: what one-sample passes may read in 16 bits.
        let one_sample_weights = quote! {
            fn set_one_sample_weights(
                &mut self,
                precision: ::chainrule::WeightPrecision,
            ) -> ::chainrule::Result<()> {
                private::check_weight_precision::<#elem>(#name, precision)?;
                #(self.#matrices.set_one_row_precision(precision);)*
                Ok(())
            }
        };

        // Buffers: every value but the loss's output, and the gradient slots.
        let mut buffer_fields = Vec::new();
        let mut buffer_news = Vec::new();
        let (mut value_resizes, mut grad_resizes) = (Vec::new(), Vec::new());
        let mut buffer = |field: Ident, doc: String, width: usize, resizes: &mut Vec<Moved>| {
            let width = lit(width);
            buffer_fields.push(moved_quote! {
                #[doc = #doc]
                #field: ::chainrule::ndarray::Array2<#elem>
            });
            buffer_news.push(moved_quote! { #field: Array2::zeros((0, #width)) });
            resizes.push(moved_quote! { private::resize_rows(&mut self.#field, rows, #width); });
        };
        for (v, value) in net.values.iter().enumerate() {
            if value.producer.is_some() && !self.is_loss_output(v) {
                let doc = format!(" Values of {}: batch × {}.", self.doc_name(v), value.shape);
                buffer(
                    self.value_field(v),
                    doc,
                    value.shape.size(),
                    &mut value_resizes,
                );
            }
        }
        for (slot, grads) in plan.grad_slots.iter().enumerate() {
            let doc = match &grads.values[..] {
                [v] => format!(" The gradient with respect to {}.", self.doc_name(*v)),
                values => format!(
                    " The gradients with respect to {}, one after the other in the backward pass.",
                    values
                        .iter()
                        .map(|&v| self.doc_name(v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            buffer(self.slot_field(slot), doc, grads.width, &mut grad_resizes);
        }

        // What nodes keep between calls: they size it themselves on first use.
        let mut running = Vec::new();
        for node in 0..net.nodes.len() {
            if let Some((field, ty, new)) = self.state(node) {
                let doc = format!(" What `{}` keeps between calls.", net.nodes[node].ident);
                buffer_fields.push(moved_quote! {
                    #[doc = #doc]
                    #field: ::chainrule::kernels::#ty
                });
                buffer_news.push(moved_quote! { #field: #new });
                if let Kernels::Norm(_) = net.nodes[node].op.kernels {
                    let ident = &net.nodes[node].ident;
                    let names = [
                        format!("{ident}.running_mean"),
                        format!("{ident}.running_var"),
                    ];
                    running.push((field, names));
                }
            }
        }
        // The mode of the last forward pass, and the generator of dropout masks.
        let mut mode_init = TokenStream::new();
        let mut mode_methods = TokenStream::new();
        if self.has_mode() {
            buffer_fields.push(moved_quote! {
                /// Whether the last forward pass was a training pass (batch statistics, dropout
                /// masks) rather than an evaluation pass.
                training: bool
            });
            buffer_news.push(moved_quote! { training: false });
        }
        if self.draws_masks() {
            buffer_fields.push(moved_quote! {
                /// The generator of the dropout masks, seeded with the network.
                masks: ::chainrule::kernels::MaskRng
            });
            buffer_news.push(moved_quote! { masks: kernels::mask_rng(seed) });
            mode_init.extend(quote!(self.masks = kernels::mask_rng(seed);));
            mode_methods.extend(quote! {
                fn seed_masks(&mut self, seed: u64) {
                    self.masks = kernels::mask_rng(seed);
                }
            });
        }
        if !running.is_empty() {
            let visit = running.iter().map(|(field, [mean, var])| {
                quote! {
                    f(::chainrule::BufferRef { name: #mean, value: self.#field.running_mean() });
                    f(::chainrule::BufferRef { name: #var, value: self.#field.running_var() });
                }
            });
            let visit_mut = running.iter().map(|(field, [mean, var])| {
                quote! {
                    f(::chainrule::BufferMut { name: #mean, value: self.#field.running_mean_mut() });
                    f(::chainrule::BufferMut { name: #var, value: self.#field.running_var_mut() });
                }
            });
            mode_methods.extend(quote! {
                fn for_each_buffer(&self, f: &mut dyn FnMut(::chainrule::BufferRef<'_, #elem>)) {
                    #(#visit)*
                }

                fn for_each_buffer_mut(
                    &mut self,
                    f: &mut dyn FnMut(::chainrule::BufferMut<'_, #elem>),
                ) {
                    #(#visit_mut)*
                }
            });
        }
        let (train_mode, eval_mode) = (self.set_mode(true), self.set_mode(false));

        // The batch, kept for a later `backward` (`gradient` reads it in place instead).
        let input_width = self.input_width();
        buffer_fields.push(moved_quote! {
            /// The last batch given to `forward` or `loss`, kept for the backward pass.
            input: ::chainrule::ndarray::Array2<#elem>
        });
        buffer_news.push(moved_quote! { input: Array2::zeros((0, #input_width)) });

        // One method per node and pass.
        let mut methods = Vec::new();
        let mut forward_calls = Vec::new();
        let (mut forward_reads, mut backward_reads) = (false, false);
        for &node in &plan.forward {
            let Some(family) = family(&net.nodes[node].op.kernels) else {
                continue;
            };
            let (method, reads) = self.with_batch(|| family.forward(self, node));
            let Some(method) = method else {
                continue;
            };
            forward_reads |= reads;
            let forward = format_ident!("forward_{}", net.nodes[node].ident);
            let (params, args) = self.batch_param(reads);
            let doc = self.node_doc(node, method.math, &method.note);
            let body = method.body;
            methods.push(braced(
                quote! {
                    #doc
                    #[inline]
                    fn #forward(&mut self, #params)
                },
                body,
            ));
            forward_calls.push(moved_quote!(self.#forward(#args);));
        }
        // Backward in reverse order; the loss (last) has written its input's gradient already.
        let mut backward_calls = Vec::new();
        // Whether some backward method takes `sgd` (a node with parameters, or an activation whose
        // backward pass `sgd_step` folds into the product after it).
        let mut backward_updates = false;
        for &node in &plan.backward {
            let this = &net.nodes[node];
            let Some(family) = family(&this.op.kernels) else {
                continue;
            };
            let (method, reads) = self.with_batch(|| family.backward(self, node));
            let Some(method) = method else {
                continue;
            };
            backward_reads |= reads;
            let backward = format_ident!("backward_{}", this.ident);
            let (mut params, mut args) = self.batch_param(reads);
            if this.op.updates_params() || plan.nodes[node].gated_into.is_some() {
                let comma = (!params.is_empty()).then(|| quote!(,));
                params.extend(quote!(#comma sgd: Option<(#elem, #elem)>));
                args.extend(quote!(#comma sgd));
                backward_updates = true;
            }
            let doc = self.node_doc(node, method.math, &self.backward_note(node, &method.note));
            let body = method.body;
            methods.push(braced(
                quote! {
                    #doc
                    #[inline]
                    fn #backward(&mut self, #params)
                },
                body,
            ));
            backward_calls.push(moved_quote!(self.#backward(#args);));
            // The node's parameters are done: the chain rule touches them no more.
            for param in &this.params {
                let field = self.param_field(node, param.name);
                backward_calls.push(moved_quote!(ready(self.#field.view());));
            }
        }

        let output_width = lit(net.values[net.output].shape.size());
        let unused = |reads: bool| (!reads).then(|| quote!(let _ = batch;));
        let (forward_unused, mut backward_unused) = (unused(forward_reads), unused(backward_reads));
        if net.param_count == 0 {
            backward_unused
                .get_or_insert_default()
                .extend(quote!(let _ = ready;));
        }
        if !backward_updates {
            backward_unused
                .get_or_insert_default()
                .extend(quote!(let _ = sgd;));
        }
        let param_count = lit(net.param_count);
        let cost = &plan.cost;
        let param_bytes = lit(cost.param_bytes);
        let inference_bytes = lit(cost.inference_bytes);
        let training_bytes = lit(cost.training_bytes);
        let forward_flops = Literal::u64_unsuffixed(cost.forward_flops);
        let training_flops = Literal::u64_unsuffixed(cost.training_flops);
        let dot = dot::render(net);
        let topology = dot::topology(net);
        let graph = graph::graph_const(net);
        let output = self.kept_view(net.output);
        let output_grad = self.grad_view_mut(net.output);
        let names = param_names.iter().map(|(name, _)| name);
        let ref_arms = param_names
            .iter()
            .map(|(name, field)| moved_quote!(#name => Ok(self.#field.view()),));
        let mut_arms = param_names
            .iter()
            .map(|(name, field)| moved_quote!(#name => Ok(self.#field.view_mut()),));
        let visit = param_names
            .iter()
            .map(|(_, field)| moved_quote!(f(self.#field.view());));
        let visit_mut = param_names
            .iter()
            .map(|(_, field)| moved_quote!(f(self.#field.view_mut());));

        let grad_inputs: Vec<(&String, TokenStream)> = net
            .inputs
            .iter()
            .filter(|input| input.grad)
            .filter_map(|input| Some((input.name.as_ref()?, self.grad_view(input.value))))
            .collect();
        let grad_input_names = grad_inputs.iter().map(|(name, _)| name);
        let grad_input_arms = grad_inputs
            .iter()
            .map(|(name, view)| moved_quote!(#name => Ok(#view),));
        let values_visit = self.values_visit();
        let dot_with_values = self.dot_with_values();

        let trainable = self
            .loss()
            .map(|(node, kernels)| loss::trainable(self, node, kernels, &train_mode, &eval_mode));

        let fields = quote! {
            #(#param_fields,)*
            #(#buffer_fields,)*
            /// Which pass the buffers hold.
            pass: ::chainrule::__private::Pass
        };
        // The large parts are moved into their braces rather than copied, as `quote!` would: an
        // expansion's time is mostly its tokens.
        let mut inherent = quote! {
                /// A network with parameters drawn by `init` from a generator seeded by `seed`.
                pub fn new(init: ::chainrule::Init, seed: u64) -> Self {
                    let mut net = #ty {
                        #(#param_news,)*
                        #(#buffer_news,)*
                        pass: private::Pass::None,
                    };
                    ::chainrule::Network::init(&mut net, init, seed);
                    net
                }

                /// Sizes the value buffers for a batch of `rows` (allocating only when that
                /// changes).
                fn resize_values(&mut self, rows: usize) {
                    #(#value_resizes)*
                }

                /// Sizes the gradient buffers for a batch of `rows` (allocating only when that
                /// changes).
                fn resize_grads(&mut self, rows: usize) {
                    #(#grad_resizes)*
                }

                /// The forward pass over `batch`, in topological order.
                fn run_forward(&mut self, batch: ArrayView2<'_, #elem>) {
                    #forward_unused
                    #(#forward_calls)*
                }

                /// The backward pass, in reverse topological order: the chain rule, node by node.
                /// `batch` is the forward pass's. With `sgd = Some((η, λ))`, each node with
                /// parameters applies an SGD step with learning rate `η` and weight decay `λ` to
                /// them instead of storing their gradients. `ready` sees each parameter as soon as
                /// its node is done, the last layer's first.
                fn run_backward(
                    &mut self,
                    batch: ArrayView2<'_, #elem>,
                    sgd: Option<(#elem, #elem)>,
                    ready: &mut dyn FnMut(::chainrule::ParamRef<'_, #elem>),
                ) {
                    #backward_unused
                    #(#backward_calls)*
                }

                /// Runs `pass` on the kept batch.
                fn on_kept_batch<R>(
                    &mut self,
                    pass: impl FnOnce(&mut Self, ArrayView2<'_, #elem>) -> R,
                ) -> R {
                    let batch = ::core::mem::take(&mut self.input);
                    let result = pass(self, batch.view());
                    self.input = batch;
                    result
                }
        };
        inherent.extend(methods);
        let mut rest = braced(quote!(impl #ty), inherent);
        rest.extend(quote! {
            impl ::core::default::Default for #ty {
                /// The book's initialisation (normal, std 0.01), seed 0.
                fn default() -> Self {
                    Self::new(::chainrule::Init::default(), 0)
                }
            }

        });
        let network = quote! {
                type Elem = #elem;
                const NAME: &'static str = #name;
                const INPUT: usize = #input_width;
                const OUTPUT: usize = #output_width;
                const PARAMS: usize = #param_count;
                const PARAM_NAMES: &'static [&'static str] = &[#(#names),*];
                const DOT: &'static str = #dot;
                const TOPOLOGY: &'static str = #topology;
                const GRAPH: ::chainrule::graph::Graph = #graph;
                const PARAM_BYTES: usize = #param_bytes;
                const ACTIVATION_BYTES_INFERENCE: usize = #inference_bytes;
                const ACTIVATION_BYTES_TRAINING: usize = #training_bytes;
                const FLOPS_FORWARD: u64 = #forward_flops;
                const FLOPS_TRAINING: u64 = #training_flops;

                fn init(&mut self, init: ::chainrule::Init, seed: u64) {
                    let mut rng = ::chainrule::init::rng(seed);
                    #(#param_inits)*
                    #mode_init
                }

                fn forward(
                    &mut self,
                    x: ArrayView2<'_, #elem>,
                ) -> ::chainrule::Result<ArrayView2<'_, #elem>> {
                    private::check_input(#name, &x, #input_width)?;
                    self.resize_values(x.nrows());
                    private::copy_input(&mut self.input, x, #input_width);
                    #eval_mode
                    self.on_kept_batch(|net, batch| net.run_forward(batch));
                    self.pass = private::Pass::Forward;
                    Ok(#output)
                }

                fn infer(
                    &mut self,
                    x: ArrayView2<'_, #elem>,
                ) -> ::chainrule::Result<ArrayView2<'_, #elem>> {
                    private::check_input(#name, &x, #input_width)?;
                    self.resize_values(x.nrows());
                    #eval_mode
                    self.run_forward(x);
                    self.pass = private::Pass::None;
                    Ok(#output)
                }

                fn output(&self) -> ArrayView2<'_, #elem> {
                    #output
                }

                fn backward_from(
                    &mut self,
                    dy: ArrayView2<'_, #elem>,
                ) -> ::chainrule::Result<()> {
                    private::check_output_grad(
                        #name,
                        self.pass,
                        &dy,
                        #output.nrows(),
                        #output_width,
                    )?;
                    self.resize_grads(dy.nrows());
                    #output_grad.assign(&dy);
                    self.on_kept_batch(|net, batch| net.run_backward(batch, None, &mut |_| {}));
                    Ok(())
                }

                fn input_grad(
                    &self,
                    name: &str,
                ) -> ::chainrule::Result<ArrayView2<'_, #elem>> {
                    match name {
                        #(#grad_input_arms)*
                        _ => Err(
                            private::no_input_grad(#name, name, &[#(#grad_input_names),*]),
                        ),
                    }
                }

                #one_sample_weights

                fn param(&self, name: &str) -> ::chainrule::Result<::chainrule::ParamRef<'_, #elem>> {
                    match name {
                        #(#ref_arms)*
                        _ => Err(
                            private::unknown_param(#name, name, Self::PARAM_NAMES),
                        ),
                    }
                }

                fn param_mut(
                    &mut self,
                    name: &str,
                ) -> ::chainrule::Result<::chainrule::ParamMut<'_, #elem>> {
                    match name {
                        #(#mut_arms)*
                        _ => Err(
                            private::unknown_param(#name, name, Self::PARAM_NAMES),
                        ),
                    }
                }

                fn for_each_param(&self, f: &mut dyn FnMut(::chainrule::ParamRef<'_, #elem>)) {
                    #(#visit)*
                }

                fn for_each_param_mut(
                    &mut self,
                    f: &mut dyn FnMut(::chainrule::ParamMut<'_, #elem>),
                ) {
                    #(#visit_mut)*
                }

        };
        let mut network = network;
        network.extend(braced(
            quote!(fn for_each_value(&self, f: &mut dyn FnMut(::chainrule::ValueRef<'_, #elem>))),
            values_visit,
        ));
        network.extend(quote! {
            fn dot_with_values(&self) -> ::std::string::String {
                #dot_with_values
            }
        });
        network.extend(mode_methods);
        rest.extend(braced(quote!(impl ::chainrule::Network for #ty), network));
        rest.extend(trainable);
        (fields, rest)
    }

    /// The test `#[gradcheck]` asks for: the same network in `f64`, in a module of its own, and
    /// its gradients against central differences. `None` without a loss (`check` refuses that).
    fn gradcheck_test(&self, body: &TokenStream) -> Option<TokenStream> {
        let ty = self.ty;
        let check = match self.loss()?.1.targets {
            crate::ops::TargetKind::Classes => quote!(generated_test_classes),
            crate::ops::TargetKind::Values => quote!(generated_test_values),
        };
        let module = format_ident!("__gradcheck_{}", ty);
        let doc = format!(
            " `{ty}`'s gradients, computed in `f64`, against central differences (generated by \
             `#[gradcheck]`)."
        );
        Some(quote! {
            #[cfg(test)]
            #[allow(non_snake_case)]
            mod #module {
                ::chainrule::network! {
                    struct #ty: f64 { #body }
                }

                #[doc = #doc]
                #[test]
                fn gradients_match_central_differences() {
                    ::chainrule::__private::#check(#ty::new(::chainrule::Init::Xavier, 1));
                }
            }
        })
    }

    /// The note of a backward method: its own, then the gradients it skips and whether it adds
    /// to gradients other paths have set.
    fn backward_note(&self, node: usize, own: &str) -> String {
        let this = &self.net.nodes[node];
        let modes = &self.plan.nodes[node].modes;
        let skipped: Vec<String> = this
            .inputs
            .iter()
            .zip(modes)
            .filter(|(_, mode)| mode.is_none())
            .map(|(&v, _)| self.doc_name(v))
            .collect();
        let mut note = if skipped.is_empty() {
            String::new()
        } else {
            format!(
                " Not computed: the gradient of {}, which nothing needs.",
                skipped.join(" and ")
            )
        };
        note.push_str(own);
        if modes.contains(&Some(GradMode::Add)) {
            note.push_str(
                " Adds to gradients that other paths have set: the chain rule sums over paths.",
            );
        }
        note
    }

    /// `for_each_value`'s body: every value in topological order.
    fn values_visit(&self) -> TokenStream {
        // The inputs in declaration order, then every node's value in topological order.
        let inputs = self.net.inputs.iter().map(|input| input.value);
        let outputs = self.net.nodes.iter().map(|node| node.output);
        let calls = inputs
            .chain(outputs)
            .filter(|&v| !self.is_loss_output(v))
            .map(|v| {
                let name = self.display_name(v);
                let op = match self.net.values[v].producer {
                    None => format!(
                        "input({})",
                        self.net.values[v]
                            .shape
                            .dims()
                            .iter()
                            .map(usize::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(node) => self.net.nodes[node].layer.describe(),
                };
                let value = self.kept_view(v);
                let grad = self.kept_grad(v);
                quote! {
                    f(::chainrule::ValueRef { name: #name, op: #op, value: #value, grad: #grad });
                }
            });
        calls.collect()
    }

    /// A value's gradient as `for_each_value` shows it: `None` unless backward computes it and it
    /// is still in its slot when the backward pass ends.
    fn kept_grad(&self, value: usize) -> TokenStream {
        if self.plan.grad_kept[value] {
            let grad = self.grad_view(value);
            quote!(Some(#grad))
        } else {
            quote!(None)
        }
    }

    /// `dot_with_values`'s body: `DOT` with each edge labelled with what flows along it, which the
    /// runtime reads through `for_each_value`.
    fn dot_with_values(&self) -> TokenStream {
        // Where each value comes in `for_each_value`'s order.
        let mut position = vec![usize::MAX; self.net.values.len()];
        let visited = self.net.inputs.iter().map(|input| input.value);
        let visited = visited.chain(self.net.nodes.iter().map(|node| node.output));
        for (k, v) in visited.filter(|&v| !self.is_loss_output(v)).enumerate() {
            position[v] = k;
        }
        let position = position.into_iter().map(lit);
        quote! {
            private::dot_with_values(
                self,
                <Self as ::chainrule::Network>::DOT,
                &[#(#position),*],
            )
        }
    }

    fn node_doc(&self, node: usize, math: &'static str, note: &str) -> TokenStream {
        let this = &self.net.nodes[node];
        let name = match self.net.values[this.output].name.as_deref() {
            Some(name) => format!("`{name}` = "),
            None => String::new(),
        };
        let head = format!(" {name}`{}` = `{}`:", this.ident, this.layer.describe());
        let math = self
            .math_docs
            .borrow_mut()
            .entry(math)
            .or_insert_with(|| Literal::string(&format!(" {math}.")))
            .clone();
        let note = (!note.is_empty()).then(|| quote!(#[doc = #note]));
        quote!(#[doc = #head] #[doc = #math] #note)
    }

    /// A forward method's note on shapes: ` 784 → 50 features.`, ` 30×24×24 → 30×12×12.`
    fn shapes_note(&self, node: usize) -> String {
        let this = &self.net.nodes[node];
        let shapes: Vec<&crate::shape::Shape> = this
            .inputs
            .iter()
            .map(|&v| &self.net.values[v].shape)
            .collect();
        let output = &self.net.values[this.output].shape;
        if output.rank() == 1 && shapes.iter().all(|shape| shape.rank() == 1) {
            let widths: Vec<String> = shapes
                .iter()
                .map(|shape| shape.size().to_string())
                .collect();
            format!(" {} → {} features.", widths.join(" + "), output.size())
        } else {
            let shapes: Vec<String> = shapes.iter().map(ToString::to_string).collect();
            format!(" {} → {output}.", shapes.join(" + "))
        }
    }

    /// Runs `generate` and says whether what it generated reads the batch.
    fn with_batch<R>(&self, generate: impl FnOnce() -> R) -> (R, bool) {
        self.reads_batch.set(false);
        let generated = generate();
        (generated, self.reads_batch.replace(false))
    }

    /// The extra parameter and argument of a method that reads the batch.
    fn batch_param(&self, reads: bool) -> (TokenStream, TokenStream) {
        let elem = &self.net.elem;
        if reads {
            (quote!(batch: ArrayView2<'_, #elem>), quote!(batch))
        } else {
            (quote!(), quote!())
        }
    }

    /// A view of a value in the pass being generated: an input's columns of the `batch`
    /// parameter, or the value's buffer.
    fn pass_view(&self, value: usize) -> TokenStream {
        if self.net.values[value].producer.is_some() {
            let buffer = self.value_field(value);
            return quote!(self.#buffer.view());
        }
        self.reads_batch.set(true);
        self.input_columns(value, quote!(batch))
    }

    /// A view of a value as the network keeps it between passes: an input's columns of the kept
    /// batch, or the value's buffer.
    fn kept_view(&self, value: usize) -> TokenStream {
        if self.net.values[value].producer.is_some() {
            let buffer = self.value_field(value);
            return quote!(self.#buffer.view());
        }
        self.input_columns(value, quote!(private::kept_input(&self.input, self.pass)))
    }

    /// An input's columns of a batch (a view): the whole of it when the network has one input.
    fn input_columns(&self, value: usize, batch: TokenStream) -> TokenStream {
        let inputs = &self.net.inputs;
        if inputs.len() == 1 {
            return batch;
        }
        let mut start = 0;
        for input in inputs {
            let width = self.net.values[input.value].shape.size();
            if input.value == value {
                let (from, to) = (lit(start), lit(start + width));
                return quote!(#batch.slice_move(::chainrule::ndarray::s![.., #from..#to]));
            }
            start += width;
        }
        quote!(#batch)
    }

    /// Features per sample of the batch: every input's, side by side.
    fn input_width(&self) -> Literal {
        lit(self
            .net
            .inputs
            .iter()
            .map(|i| self.net.values[i.value].shape.size())
            .sum())
    }

    /// The loss node and its kernels, if the network has one.
    fn loss(&self) -> Option<(usize, &crate::ops::LossKernels)> {
        let index = self.net.nodes.len().checked_sub(1)?;
        match &self.net.nodes[index].op.kernels {
            Kernels::Loss(kernels) => Some((index, kernels)),
            _ => None,
        }
    }

    fn is_loss_output(&self, value: usize) -> bool {
        self.loss()
            .is_some_and(|(node, _)| self.net.nodes[node].output == value)
    }

    /// How people see a value's name: its name in the description, or its node's, or `input`.
    fn display_name(&self, value: usize) -> String {
        let v = &self.net.values[value];
        match (&v.name, v.producer) {
            (Some(name), _) => name.clone(),
            (None, Some(node)) => self.net.nodes[node].ident.clone(),
            (None, None) => "input".to_owned(),
        }
    }

    /// The field holding a value: an input's name, or its node's output buffer.
    fn value_field(&self, value: usize) -> Ident {
        let v = &self.net.values[value];
        match (v.producer, &v.name) {
            (None, None) => format_ident!("input"),
            (None, Some(name)) => format_ident!("{}_in", name),
            (Some(node), _) => format_ident!("{}_out", self.net.nodes[node].ident),
        }
    }

    /// The field of a gradient slot: named after its gradient when it holds one (`affine0_dout`,
    /// `x_in_grad`), `grads{k}` when several take turns in it.
    fn slot_field(&self, slot: usize) -> Ident {
        match self.plan.grad_slots[slot].values[..] {
            [value] => {
                let v = &self.net.values[value];
                match (v.producer, &v.name) {
                    (None, None) => format_ident!("input_grad"),
                    (None, Some(name)) => format_ident!("{}_in_grad", name),
                    (Some(node), _) => format_ident!("{}_dout", self.net.nodes[node].ident),
                }
            }
            _ => format_ident!("grads{}", slot),
        }
    }

    /// A view of the gradient with respect to a value, in its slot.
    fn grad_view(&self, value: usize) -> TokenStream {
        let (field, width) = self.grad_slot_of(value);
        match width {
            None => quote!(self.#field.view()),
            Some(width) => quote!(private::slot(&self.#field, #width)),
        }
    }

    /// A mutable view of the gradient with respect to a value, in its slot.
    fn grad_view_mut(&self, value: usize) -> TokenStream {
        let (field, width) = self.grad_slot_of(value);
        match width {
            None => quote!(self.#field.view_mut()),
            Some(width) => quote!(private::slot_mut(&mut self.#field, #width)),
        }
    }

    /// The field of a value's gradient slot, and the gradient's width when it is narrower than
    /// the slot.
    fn grad_slot_of(&self, value: usize) -> (Ident, Option<Literal>) {
        let Some(slot) = self.plan.grad_slot[value] else {
            return (format_ident!("no_gradient"), None);
        };
        let width = self.net.values[value].shape.size();
        let narrower = width < self.plan.grad_slots[slot].width;
        (self.slot_field(slot), narrower.then(|| lit(width)))
    }

    /// How docs name a value.
    fn doc_name(&self, value: usize) -> String {
        let v = &self.net.values[value];
        match (v.producer, &v.name) {
            (None, None) => "the network's input".to_owned(),
            (None, Some(name)) => format!("the input `{name}`"),
            (Some(_), Some(name)) => format!("`{name}`"),
            (Some(node), None) => format!("`{}`'s output", self.net.nodes[node].ident),
        }
    }

    /// The field of a node's parameter: `affine0_weight`.
    fn param_field(&self, node: usize, param: &str) -> Ident {
        format_ident!("{}_{}", self.net.nodes[node].ident, param)
    }

    /// The field of what a node keeps between calls (a convolution's scratch, a max pool's
    /// argmax, a batch normalisation's statistics, a dropout's mask), its type in `kernels`, and
    /// how it starts, if the node keeps anything.
    fn state(&self, node: usize) -> Option<(Ident, TokenStream, TokenStream)> {
        let this = &self.net.nodes[node];
        let elem = &self.net.elem;
        let default = quote!(::core::default::Default::default());
        let (ty, new) = match &this.op.kernels {
            Kernels::Conv(_) => (quote!(ConvScratch<#elem>), default),
            Kernels::Pool(kernels) => {
                let ty = format_ident!("{}", kernels.state?);
                (quote!(#ty), default)
            }
            Kernels::Norm(_) => {
                let channels = lit(self.net.values[this.inputs[0]].shape.dims()[0]);
                (
                    quote!(BatchNormState<#elem>),
                    quote!(::chainrule::kernels::BatchNormState::new(#channels)),
                )
            }
            Kernels::Dropout(_) => (quote!(DropoutMask<#elem>), default),
            _ => return None,
        };
        Some((format_ident!("{}_state", this.ident), ty, new))
    }

    /// Whether some op computes differently in training and in evaluation: the network then
    /// keeps the mode of its last forward pass.
    fn has_mode(&self) -> bool {
        self.net.nodes.iter().any(|node| node.op.kernels.has_mode())
    }

    /// Whether some op draws dropout masks: the network then has a generator for them.
    fn draws_masks(&self) -> bool {
        self.net
            .nodes
            .iter()
            .any(|node| matches!(node.op.kernels, Kernels::Dropout(_)))
    }

    /// The statement that puts the network in `training` mode or evaluation mode before a forward
    /// pass; nothing for a network without a training mode.
    fn set_mode(&self, training: bool) -> Option<TokenStream> {
        self.has_mode().then(|| quote!(self.training = #training;))
    }
}

/// Tokens that `quote!` moves into place where they are interpolated, where it would copy a
/// `TokenStream` token by token (an expansion's time is mostly its tokens). Each is interpolated
/// once.
struct Moved(RefCell<Option<TokenStream>>);

impl quote::ToTokens for Moved {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let moved = self.0.take().expect("generated tokens interpolated twice");
        // As one stream, not tree by tree: inside the compiler that is one call across the bridge.
        tokens.extend(std::iter::once(moved));
    }
}

/// `quote!`, as tokens that are moved rather than copied where they are interpolated.
macro_rules! moved_quote {
    ($($tt:tt)*) => {
        Moved(RefCell::new(Some(quote!($($tt)*))))
    };
}
use moved_quote;

/// `prefix { body }`, with `body` moved into the braces (`quote!` would copy it).
fn braced(mut prefix: TokenStream, body: TokenStream) -> TokenStream {
    let braces = proc_macro2::Group::new(proc_macro2::Delimiter::Brace, body);
    prefix.extend([proc_macro2::TokenTree::Group(braces)]);
    prefix
}

/// An integer literal without a suffix, as a person would write it.
fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use proc_macro2::TokenStream;

    /// The generated methods of one node (`forward_{ident}`, `backward_{ident}`, `loss_{ident}`),
    /// pretty-printed, from the expression form of `body`.
    pub fn methods(body: TokenStream, ident: &str) -> String {
        let expansion = crate::expand(body);
        let block: syn::Block = syn::parse2(quote::quote!({ #expansion })).expect("valid Rust");
        let wanted = [
            format!("forward_{ident}"),
            format!("backward_{ident}"),
            format!("loss_{ident}"),
        ];
        let mut found = Vec::new();
        let mut pending: Vec<&syn::Stmt> = block.stmts.iter().collect();
        while let Some(stmt) = pending.pop() {
            match stmt {
                syn::Stmt::Expr(syn::Expr::Block(inner), _) => {
                    pending.extend(inner.block.stmts.iter());
                }
                syn::Stmt::Item(syn::Item::Impl(item)) if item.trait_.is_none() => {
                    for item in &item.items {
                        if let syn::ImplItem::Fn(method) = item
                            && wanted.contains(&method.sig.ident.to_string())
                        {
                            found.push(method.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        found.sort_by_key(|method| !method.sig.ident.to_string().starts_with("forward"));
        assert!(
            !found.is_empty(),
            "no methods of `{ident}` in:\n{expansion}"
        );
        let file: syn::File = syn::parse2(quote::quote! {
            impl Network { #(#found)* }
        })
        .expect("valid Rust");
        prettyplease::unparse(&file)
    }
}
