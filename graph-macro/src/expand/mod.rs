//! Stage 4: the generated code. The only stage that builds Rust syntax.
//!
//! For each network it emits a struct (parameters public, value and gradient buffers private),
//! one small method per node and pass whose doc comment names the source layer and the math it
//! does, `run_forward`/`run_backward` that call them in topological and reverse topological order,
//! and impls of the runtime's `Network` and (with a loss) `Trainable` traits.

use std::cell::Cell;
use std::collections::HashSet;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote};
use syn::Ident;

use crate::check::{Checked, CheckedNode, ResolvedInit};
use crate::dot;
use crate::ops::{Kernels, TargetKind};
use crate::parse::{Form, NetworkDef};

pub fn expand(def: &NetworkDef, net: &Checked) -> TokenStream {
    let ty = match &def.form {
        Form::Item { ident, .. } => ident.clone(),
        Form::Expr => Ident::new("Network", Span::mixed_site()),
    };
    let generator = Generator {
        net,
        ty: &ty,
        reads_batch: Cell::new(false),
    };
    let (fields, rest) = generator.generate();
    match &def.form {
        Form::Item { attrs, vis, .. } => quote! {
            #(#attrs)*
            #vis struct #ty { #fields }
            #rest
        },
        Form::Expr => quote! {
            {
                struct #ty { #fields }
                #rest
                <#ty as ::core::default::Default>::default()
            }
        },
    }
}

struct Generator<'a> {
    net: &'a Checked<'a>,
    ty: &'a Ident,
    /// Set when generated code reads the batch (an input value): the method being generated
    /// then takes the batch as a parameter.
    reads_batch: Cell<bool>,
}

/// How a backward method stores an input's gradient: the first path to reach a value sets its
/// gradient buffer, later ones add to it.
#[derive(Clone, Copy)]
enum Mode {
    Set,
    Add,
}

impl quote::ToTokens for Mode {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(match self {
            Mode::Set => quote!(::chainrule::kernels::GradMode::Set),
            Mode::Add => quote!(::chainrule::kernels::GradMode::Add),
        });
    }
}

impl Generator<'_> {
    /// The struct's fields, and everything after the struct.
    fn generate(&self) -> (TokenStream, TokenStream) {
        let net = self.net;
        let ty = self.ty;
        let elem = &net.elem;
        let name = &net.name;

        // Parameters: one public field each.
        let mut param_fields = Vec::new();
        let mut param_news = Vec::new();
        let mut param_names = Vec::new();
        let mut param_inits = Vec::new();
        let mut matrices = Vec::new();
        for node in &net.nodes {
            for param in &node.params {
                let field = param_field(node, param.name);
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
                param_fields.push(quote! {
                    #[doc = #doc]
                    pub #field: ::chainrule::Param<#elem, ::chainrule::ndarray::#rank>
                });
                param_news
                    .push(quote! { #field: ::chainrule::Param::zeros(#param_name, (#(#shape,)*)) });
                let how = match param.init {
                    ResolvedInit::Weight { fan_in } => {
                        let fan_in = lit(fan_in);
                        quote!(::chainrule::ParamInit::Weight { fan_in: #fan_in })
                    }
                    ResolvedInit::Zero => quote!(::chainrule::ParamInit::Zero),
                };
                param_inits.push(quote! { self.#field.init(#how, init, &mut rng); });
                param_names.push((param_name, field));
            }
        }
        // Weight matrices: what one-sample passes may read in 16 bits.
        let one_sample_weights = quote! {
            fn set_one_sample_weights(
                &mut self,
                precision: ::chainrule::WeightPrecision,
            ) -> ::chainrule::Result<()> {
                ::chainrule::check_weight_precision::<#elem>(#name, precision)?;
                #(self.#matrices.set_one_row_precision(precision);)*
                ::core::result::Result::Ok(())
            }
        };

        // Buffers: every value but the loss's output, and a gradient where backward needs one.
        let mut buffer_fields = Vec::new();
        let mut buffer_news = Vec::new();
        let mut buffer_resizes = Vec::new();
        for (v, value) in net.values.iter().enumerate() {
            if self.is_loss_output(v) {
                continue;
            }
            let width = lit(value.width);
            let mut add = |field: Ident, doc: String| {
                buffer_fields.push(quote! {
                    #[doc = #doc]
                    #field: ::chainrule::ndarray::Array2<#elem>
                });
                buffer_news
                    .push(quote! { #field: ::chainrule::ndarray::Array2::zeros((0, #width)) });
                buffer_resizes
                    .push(quote! { ::chainrule::resize_rows(&mut self.#field, rows, #width); });
            };
            if value.producer.is_some() {
                add(
                    self.value(v),
                    format!(" Values of {}: batch × {}.", self.value_doc(v), value.width),
                );
            }
            if self.has_grad(v) {
                add(
                    self.grad(v),
                    format!(" The gradient with respect to {}.", self.value_doc(v)),
                );
            }
        }

        // The batch, kept for a later `backward` (`gradient` reads it in place instead).
        let input_width: usize = net.inputs.iter().map(|i| net.values[i.value].width).sum();
        let input_width_lit = lit(input_width);
        buffer_fields.push(quote! {
            /// The last batch given to `forward` or `loss`, kept for the backward pass.
            input: ::chainrule::ndarray::Array2<#elem>
        });
        buffer_news
            .push(quote! { input: ::chainrule::ndarray::Array2::zeros((0, #input_width_lit)) });

        // One method per node and pass.
        let mut methods = Vec::new();
        let mut forward_calls = Vec::new();
        let (mut forward_reads, mut backward_reads) = (false, false);
        for node in &net.nodes {
            if node.op.is_loss() {
                continue;
            }
            if self.relu_fused_into_producer(node) {
                continue;
            }
            let forward = format_ident!("forward_{}", node.ident);
            let ((doc, body), reads) = self.with_batch(|| self.forward_body(node));
            forward_reads |= reads;
            let (params, args) = self.batch_param(reads, elem);
            methods.push(quote! {
                #[doc = #doc]
                #[inline]
                fn #forward(&mut self, #params) { #body }
            });
            forward_calls.push(quote!(self.#forward(#args);));
        }
        // Backward in reverse order; the loss (last) has written its input's gradient already.
        let mut written: HashSet<usize> = HashSet::from([net.output]);
        let mut backward_calls = Vec::new();
        // Whether some backward method takes `sgd` (a node with parameters, or a ReLU whose
        // backward pass `sgd_step` folds into the product after it).
        let mut backward_updates = false;
        for node in net.nodes.iter().rev() {
            if node.op.is_loss() {
                continue;
            }
            if let (Some((doc, body)), reads) =
                self.with_batch(|| self.backward_body(node, &mut written))
            {
                backward_reads |= reads;
                let backward = format_ident!("backward_{}", node.ident);
                let (mut params, mut args) = self.batch_param(reads, elem);
                if node.op.updates_params() || self.gated_into_reader(node) {
                    let comma = (!params.is_empty()).then(|| quote!(,));
                    params.extend(quote!(#comma sgd: ::core::option::Option<(#elem, #elem)>));
                    args.extend(quote!(#comma sgd));
                    backward_updates = true;
                }
                methods.push(quote! {
                    #[doc = #doc]
                    #[inline]
                    fn #backward(&mut self, #params) { #body }
                });
                backward_calls.push(quote!(self.#backward(#args);));
            }
        }

        let output_width = lit(net.values[net.output].width);
        let unused = |reads: bool| (!reads).then(|| quote!(let _ = batch;));
        let (forward_unused, mut backward_unused) = (unused(forward_reads), unused(backward_reads));
        if !backward_updates {
            backward_unused
                .get_or_insert_default()
                .extend(quote!(let _ = sgd;));
        }
        let param_count = lit(net.param_count);
        let dot = dot::render(net);
        let output = self.stored(net.output);
        let output_grad = self.grad(net.output);
        let names = param_names.iter().map(|(name, _)| name);
        let ref_arms = param_names
            .iter()
            .map(|(name, field)| quote!(#name => ::core::result::Result::Ok(self.#field.view()),));
        let mut_arms = param_names.iter().map(
            |(name, field)| quote!(#name => ::core::result::Result::Ok(self.#field.view_mut()),),
        );
        let visit = param_names
            .iter()
            .map(|(_, field)| quote!(f(self.#field.view());));
        let visit_mut = param_names
            .iter()
            .map(|(_, field)| quote!(f(self.#field.view_mut());));

        let grad_inputs: Vec<(&String, Ident)> = net
            .inputs
            .iter()
            .filter(|input| input.grad)
            .filter_map(|input| Some((input.name.as_ref()?, self.grad(input.value))))
            .collect();
        let grad_input_names = grad_inputs.iter().map(|(name, _)| name);
        let grad_input_arms = grad_inputs
            .iter()
            .map(|(name, field)| quote!(#name => ::core::result::Result::Ok(self.#field.view()),));
        let values_visit = self.values_visit();
        let dot_with_values = self.dot_with_values();

        let trainable = self.loss().map(|loss| self.trainable(loss));

        let fields = quote! {
            #(#param_fields,)*
            #(#buffer_fields,)*
            /// Which pass the buffers hold.
            pass: ::chainrule::Pass
        };
        let rest = quote! {
            impl #ty {
                /// A network with parameters drawn by `init` from a generator seeded by `seed`.
                pub fn new(init: ::chainrule::Init, seed: u64) -> Self {
                    let mut net = #ty {
                        #(#param_news,)*
                        #(#buffer_news,)*
                        pass: ::chainrule::Pass::None,
                    };
                    ::chainrule::Network::init(&mut net, init, seed);
                    net
                }

                /// Sizes the buffers for a batch of `rows` (allocating only when that changes).
                fn resize(&mut self, rows: usize) {
                    #(#buffer_resizes)*
                }

                /// The forward pass over `batch`, in topological order.
                fn run_forward(&mut self, batch: ::chainrule::ndarray::ArrayView2<'_, #elem>) {
                    #forward_unused
                    #(#forward_calls)*
                }

                /// The backward pass, in reverse topological order: the chain rule, node by node.
                /// `batch` is the forward pass's. With `sgd = Some((η, λ))`, each node with
                /// parameters applies an SGD step with learning rate `η` and weight decay `λ` to
                /// them instead of storing their gradients.
                fn run_backward(
                    &mut self,
                    batch: ::chainrule::ndarray::ArrayView2<'_, #elem>,
                    sgd: ::core::option::Option<(#elem, #elem)>,
                ) {
                    #backward_unused
                    #(#backward_calls)*
                }

                /// Runs `pass` on the kept batch.
                fn on_kept_batch<R>(
                    &mut self,
                    pass: impl FnOnce(&mut Self, ::chainrule::ndarray::ArrayView2<'_, #elem>) -> R,
                ) -> R {
                    let batch = ::core::mem::take(&mut self.input);
                    let result = pass(self, batch.view());
                    self.input = batch;
                    result
                }

                #(#methods)*
            }

            impl ::core::default::Default for #ty {
                /// The book's initialisation (normal, std 0.01), seed 0.
                fn default() -> Self {
                    Self::new(::chainrule::Init::default(), 0)
                }
            }

            impl ::chainrule::Network for #ty {
                type Elem = #elem;
                const NAME: &'static str = #name;
                const INPUT: usize = #input_width_lit;
                const OUTPUT: usize = #output_width;
                const PARAMS: usize = #param_count;
                const PARAM_NAMES: &'static [&'static str] = &[#(#names),*];
                const DOT: &'static str = #dot;

                fn init(&mut self, init: ::chainrule::Init, seed: u64) {
                    let mut rng = ::chainrule::init::rng(seed);
                    #(#param_inits)*
                }

                fn forward(
                    &mut self,
                    x: ::chainrule::ndarray::ArrayView2<'_, #elem>,
                ) -> ::chainrule::Result<::chainrule::ndarray::ArrayView2<'_, #elem>> {
                    ::chainrule::check_input(#name, &x, #input_width_lit)?;
                    self.resize(x.nrows());
                    ::chainrule::copy_input(&mut self.input, x, #input_width_lit);
                    self.on_kept_batch(|net, batch| net.run_forward(batch));
                    self.pass = ::chainrule::Pass::Forward;
                    ::core::result::Result::Ok(#output)
                }

                fn output(&self) -> ::chainrule::ndarray::ArrayView2<'_, #elem> {
                    #output
                }

                fn backward_from(
                    &mut self,
                    dy: ::chainrule::ndarray::ArrayView2<'_, #elem>,
                ) -> ::chainrule::Result<()> {
                    ::chainrule::check_output_grad(
                        #name,
                        self.pass,
                        &dy,
                        #output.nrows(),
                        #output_width,
                    )?;
                    self.#output_grad.assign(&dy);
                    self.on_kept_batch(|net, batch| net.run_backward(batch, ::core::option::Option::None));
                    ::core::result::Result::Ok(())
                }

                fn input_grad(
                    &self,
                    name: &str,
                ) -> ::chainrule::Result<::chainrule::ndarray::ArrayView2<'_, #elem>> {
                    match name {
                        #(#grad_input_arms)*
                        _ => ::core::result::Result::Err(
                            ::chainrule::no_input_grad(#name, name, &[#(#grad_input_names),*]),
                        ),
                    }
                }

                #one_sample_weights

                fn param(&self, name: &str) -> ::chainrule::Result<::chainrule::ParamRef<'_, #elem>> {
                    match name {
                        #(#ref_arms)*
                        _ => ::core::result::Result::Err(
                            ::chainrule::unknown_param(#name, name, Self::PARAM_NAMES),
                        ),
                    }
                }

                fn param_mut(
                    &mut self,
                    name: &str,
                ) -> ::chainrule::Result<::chainrule::ParamMut<'_, #elem>> {
                    match name {
                        #(#mut_arms)*
                        _ => ::core::result::Result::Err(
                            ::chainrule::unknown_param(#name, name, Self::PARAM_NAMES),
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

                fn for_each_value(&self, f: &mut dyn FnMut(::chainrule::ValueRef<'_, #elem>)) {
                    #values_visit
                }

                fn dot_with_values(&self) -> ::std::string::String {
                    #dot_with_values
                }
            }

            #trainable
        };
        (fields, rest)
    }

    /// The `Trainable` impl and the loss method.
    fn trainable(&self, loss: &CheckedNode) -> TokenStream {
        let net = self.net;
        let ty = self.ty;
        let elem = &net.elem;
        let name = &net.name;
        let input_width = lit(net.inputs.iter().map(|i| net.values[i.value].width).sum());
        let Kernels::Loss {
            kernel,
            targets,
            math,
        } = loss.op.kernels
        else {
            unreachable!("`loss()` returns only loss nodes")
        };
        let kernel = format_ident!("{kernel}");
        let targets_ty = match targets {
            TargetKind::Classes => quote!(&'t [usize]),
            TargetKind::Values => quote!(::chainrule::ndarray::ArrayView2<'t, #elem>),
        };
        let (x, reads) = self.with_batch(|| self.read(loss.inputs[0]));
        let (params, args) = self.batch_param(reads, elem);
        let bind = if reads {
            quote!(let batch = x;)
        } else {
            quote!()
        };
        let dx = self.grad(loss.inputs[0]);
        let method = format_ident!("loss_{}", loss.ident);
        let doc = format!(
            " `{}` = `{}`: {math}. The gradient is computed with the loss.",
            loss.ident,
            loss.layer.describe()
        );
        quote! {
            impl #ty {
                #[doc = #doc]
                #[inline]
                fn #method(&mut self, t: <Self as ::chainrule::Trainable>::Targets<'_>, #params) -> #elem {
                    ::chainrule::kernels::#kernel(#x, t, self.#dx.view_mut())
                }

                /// `gradient` (`sgd = None`) or `sgd_step_with_decay` (`sgd = Some((η, λ))`): the
                /// forward pass, the loss and the backward pass, all reading `x` in place, so
                /// nothing is kept for a later `backward`.
                fn train_pass(
                    &mut self,
                    x: ::chainrule::ndarray::ArrayView2<'_, #elem>,
                    t: <Self as ::chainrule::Trainable>::Targets<'_>,
                    sgd: ::core::option::Option<(#elem, #elem)>,
                ) -> ::chainrule::Result<#elem> {
                    let outputs = <Self as ::chainrule::Network>::OUTPUT;
                    ::chainrule::check_batch(#name, &x, #input_width, &t, outputs)?;
                    self.resize(x.nrows());
                    self.run_forward(x);
                    #bind
                    let loss = self.#method(t, #args);
                    self.run_backward(x, sgd);
                    self.pass = ::chainrule::Pass::None;
                    ::core::result::Result::Ok(loss)
                }
            }

            impl ::chainrule::Trainable for #ty {
                type Targets<'t> = #targets_ty;

                fn loss(
                    &mut self,
                    x: ::chainrule::ndarray::ArrayView2<'_, #elem>,
                    t: Self::Targets<'_>,
                ) -> ::chainrule::Result<#elem> {
                    let outputs = <Self as ::chainrule::Network>::OUTPUT;
                    ::chainrule::check_batch(#name, &x, #input_width, &t, outputs)?;
                    self.resize(x.nrows());
                    ::chainrule::copy_input(&mut self.input, x, #input_width);
                    let loss = self.on_kept_batch(|net, batch| {
                        net.run_forward(batch);
                        net.#method(t, #args)
                    });
                    self.pass = ::chainrule::Pass::Loss;
                    ::core::result::Result::Ok(loss)
                }

                fn backward(&mut self) -> ::chainrule::Result<()> {
                    if self.pass != ::chainrule::Pass::Loss {
                        return ::core::result::Result::Err(::chainrule::Error::BackwardBeforeLoss);
                    }
                    self.on_kept_batch(|net, batch| net.run_backward(batch, ::core::option::Option::None));
                    ::core::result::Result::Ok(())
                }

                fn gradient(
                    &mut self,
                    x: ::chainrule::ndarray::ArrayView2<'_, #elem>,
                    t: Self::Targets<'_>,
                ) -> ::chainrule::Result<#elem> {
                    self.train_pass(x, t, ::core::option::Option::None)
                }

                fn sgd_step_with_decay(
                    &mut self,
                    x: ::chainrule::ndarray::ArrayView2<'_, #elem>,
                    t: Self::Targets<'_>,
                    lr: f64,
                    weight_decay: f64,
                ) -> ::chainrule::Result<#elem> {
                    let step = (
                        <#elem as ::chainrule::Element>::from_f64(lr),
                        <#elem as ::chainrule::Element>::from_f64(weight_decay),
                    );
                    self.train_pass(x, t, ::core::option::Option::Some(step))
                }
            }
        }
    }

    /// The doc comment and body of a node's forward method.
    fn forward_body(&self, node: &CheckedNode) -> (String, TokenStream) {
        let xs: Vec<TokenStream> = node.inputs.iter().map(|&v| self.read(v)).collect();
        let y = self.value(node.output);
        let widths: Vec<String> = node
            .inputs
            .iter()
            .map(|&v| self.net.values[v].width.to_string())
            .collect();
        let widths = format!(
            " {} → {} features.",
            widths.join(" + "),
            self.net.values[node.output].width
        );
        match node.op.kernels {
            Kernels::Affine {
                forward,
                forward_math,
                ..
            } => {
                let kernel = format_ident!("{forward}");
                let (w, b) = (param_field(node, "weight"), param_field(node, "bias"));
                let x = &xs[0];
                if let Some(relu) = self.fused_relu(node) {
                    let out = self.value(relu.output);
                    let relu_name = match &self.net.values[relu.output].name {
                        Some(name) => format!("`{name}` = `{}`", relu.ident),
                        None => format!("`{}`", relu.ident),
                    };
                    let note = format!(
                        "{widths} Also computes {relu_name} = `relu`: y = max(x, 0), as the sums \
                         are stored."
                    );
                    return (
                        self.node_doc(node, forward_math, &note),
                        quote! {
                            ::chainrule::kernels::affine_relu_forward(
                                #x, self.#w.weights(), self.#b.value(),
                                self.#y.view_mut(), self.#out.view_mut(),
                            );
                        },
                    );
                }
                (
                    self.node_doc(node, forward_math, &widths),
                    quote! {
                        ::chainrule::kernels::#kernel(
                            #x, self.#w.weights(), self.#b.value(), self.#y.view_mut(),
                        );
                    },
                )
            }
            Kernels::Elementwise {
                forward,
                forward_math,
                ..
            } => {
                let kernel = format_ident!("{forward}");
                let x = &xs[0];
                (
                    self.node_doc(node, forward_math, &widths),
                    quote!(::chainrule::kernels::#kernel(#x, self.#y.view_mut());),
                )
            }
            Kernels::Merge {
                forward,
                forward_math,
                ..
            } => {
                let kernel = format_ident!("{forward}");
                let (a, b) = (&xs[0], &xs[1]);
                (
                    self.node_doc(node, forward_math, &widths),
                    quote! {
                        ::chainrule::kernels::#kernel(#a, #b, self.#y.view_mut());
                    },
                )
            }
            Kernels::Concat {
                forward,
                forward_math,
                ..
            } => {
                let kernel = format_ident!("{forward}");
                (
                    self.node_doc(node, forward_math, &widths),
                    quote! {
                        ::chainrule::kernels::#kernel(&[#(#xs),*], self.#y.view_mut());
                    },
                )
            }
            Kernels::Loss { .. } | Kernels::Source => {
                unreachable!("losses run in `loss` and inputs are copied in `prepare`")
            }
        }
    }

    /// The doc comment and body of a node's backward method; `None` when nothing upstream needs a
    /// gradient from it. `written` holds the values whose gradient buffers a later node (earlier in
    /// the backward pass) has written.
    fn backward_body(
        &self,
        node: &CheckedNode,
        written: &mut HashSet<usize>,
    ) -> Option<(String, TokenStream)> {
        if !self.has_grad(node.output) {
            return None;
        }
        let y = self.value(node.output);
        let dy = self.grad(node.output);
        // The mode for each input that needs a gradient, in argument order.
        let modes: Vec<Option<Mode>> = node
            .inputs
            .iter()
            .map(|&v| {
                self.net.values[v].needs_grad.then(|| {
                    if written.insert(v) {
                        Mode::Set
                    } else {
                        Mode::Add
                    }
                })
            })
            .collect();
        let skipped: Vec<String> = node
            .inputs
            .iter()
            .zip(&modes)
            .filter(|(_, mode)| mode.is_none())
            .map(|(&v, _)| self.value_doc(v))
            .collect();
        let mut note = if skipped.is_empty() {
            String::new()
        } else {
            format!(
                " Not computed: the gradient of {}, which nothing needs.",
                skipped.join(" and ")
            )
        };
        let xs: Vec<TokenStream> = node.inputs.iter().map(|&v| self.read(v)).collect();
        let dxs: Vec<Ident> = node.inputs.iter().map(|&v| self.grad(v)).collect();
        let (math, body) = match node.op.kernels {
            Kernels::Affine {
                backward_params,
                backward_input,
                sgd_update,
                backward_math,
                ..
            } => {
                let (w, b) = (param_field(node, "weight"), param_field(node, "bias"));
                let (params, update) = (
                    format_ident!("{backward_params}"),
                    format_ident!("{sgd_update}"),
                );
                let x = &xs[0];
                // The input's gradient first: it reads W as the forward pass used it, before
                // an SGD update changes it.
                let mut body = TokenStream::new();
                if let Some(mode) = modes[0] {
                    let kernel = format_ident!("{backward_input}");
                    let dx = &dxs[0];
                    let plain = quote! {
                        ::chainrule::kernels::#kernel(
                            self.#w.value(), self.#dy.view(), self.#dx.view_mut(), #mode,
                        );
                    };
                    body.extend(match self.gated_relu(node) {
                        // `sgd_step` keeps no gradient for people to read, so it skips the
                        // ReLU output's and sets the ReLU input's gradient in the product.
                        Some(relu) => {
                            note.push_str(&format!(
                                " With `sgd = Some(_)` the input gradient's product does `{}`'s \
                                 backward pass as well: dx = (dy·Wᵀ) ⊙ [y > 0].",
                                relu.ident
                            ));
                            let (y, du) = (self.value(relu.output), self.grad(relu.inputs[0]));
                            quote! {
                                if sgd.is_some() {
                                    ::chainrule::kernels::affine_relu_backward_input(
                                        self.#w.value(), self.#dy.view(), self.#y.view(),
                                        self.#du.view_mut(),
                                    );
                                } else {
                                    #plain
                                }
                            }
                        }
                        None => plain,
                    });
                }
                body.extend(quote! {
                    match sgd {
                        ::core::option::Option::None => ::chainrule::kernels::#params(
                            #x, self.#dy.view(), self.#w.grad_mut(), self.#b.grad_mut(),
                        ),
                        ::core::option::Option::Some((lr, decay)) => ::chainrule::kernels::#update(
                            #x, self.#dy.view(), self.#w.value_mut(), self.#b.value_mut(), lr,
                            decay,
                        ),
                    }
                });
                (backward_math, body)
            }
            Kernels::Elementwise {
                backward,
                backward_math,
                ..
            } => {
                let mode = modes[0]?;
                let kernel = format_ident!("{backward}");
                let dx = &dxs[0];
                let mut body = quote! {
                    ::chainrule::kernels::#kernel(
                        self.#y.view(), self.#dy.view(), self.#dx.view_mut(), #mode,
                    );
                };
                if self.gated_into_reader(node) {
                    note.push_str(
                        " With `sgd = Some(_)` the product after it has done this already.",
                    );
                    body = quote!(if sgd.is_none() { #body });
                }
                (backward_math, body)
            }
            Kernels::Merge {
                backward,
                backward_math,
                ..
            } => {
                let (a, b) = (&xs[0], &xs[1]);
                let mut body = TokenStream::new();
                for ((kernel, mode), dx) in backward.iter().zip(&modes).zip(&dxs) {
                    let Some(mode) = mode else { continue };
                    let kernel = format_ident!("{kernel}");
                    body.extend(quote! {
                        ::chainrule::kernels::#kernel(
                            #a, #b, self.#y.view(), self.#dy.view(),
                            self.#dx.view_mut(), #mode,
                        );
                    });
                }
                if body.is_empty() {
                    return None;
                }
                (backward_math, body)
            }
            Kernels::Concat {
                backward,
                backward_math,
                ..
            } => {
                let kernel = format_ident!("{backward}");
                let mut body = TokenStream::new();
                let mut offset = 0;
                for ((&v, mode), dx) in node.inputs.iter().zip(&modes).zip(&dxs) {
                    let start = lit(offset);
                    offset += self.net.values[v].width;
                    let Some(mode) = mode else { continue };
                    body.extend(quote! {
                        ::chainrule::kernels::#kernel(self.#dy.view(), #start, self.#dx.view_mut(), #mode);
                    });
                }
                if body.is_empty() {
                    return None;
                }
                (backward_math, body)
            }
            Kernels::Loss { .. } | Kernels::Source => return None,
        };
        let accumulates = modes.iter().any(|mode| matches!(mode, Some(Mode::Add)));
        let note = if accumulates {
            format!(
                "{note} Adds to gradients that other paths have set: the chain rule sums over paths."
            )
        } else {
            note
        };
        Some((self.node_doc(node, math, &note), body))
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
                let name = self.value_name(v);
                let op = match self.net.values[v].producer {
                    None => format!("input({})", self.net.values[v].width),
                    Some(node) => self.net.nodes[node].layer.describe(),
                };
                let value = self.stored(v);
                let grad = if self.has_grad(v) {
                    let grad = self.grad(v);
                    quote!(::core::option::Option::Some(self.#grad.view()))
                } else {
                    quote!(::core::option::Option::None)
                };
                quote! {
                    f(::chainrule::ValueRef { name: #name, op: #op, value: #value, grad: #grad });
                }
            });
        quote!(#(#calls)*)
    }

    /// `dot_with_values`'s body: `DOT`'s nodes, and each edge labelled with what flows along it.
    fn dot_with_values(&self) -> TokenStream {
        let (head, edges) = dot::parts(self.net);
        let edges = edges.iter().map(|&(from, to)| {
            let value = self.stored(from);
            let grad = if self.has_grad(from) {
                let grad = self.grad(from);
                quote!(::core::option::Option::Some(self.#grad.view()))
            } else {
                quote!(::core::option::Option::None)
            };
            let line = format!("  v{from} -> {} [label=\"{{}}\"];\n", dot::node_id(to));
            quote! {
                dot.push_str(&::std::format!(#line, ::chainrule::edge_label(#value, #grad)));
            }
        });
        quote! {
            let mut dot = ::std::string::String::from(#head);
            #(#edges)*
            dot.push_str("}\n");
            dot
        }
    }

    fn node_doc(&self, node: &CheckedNode, math: &str, note: &str) -> String {
        let name = match self.net.values[node.output].name.as_deref() {
            Some(name) => format!("`{name}` = "),
            None => String::new(),
        };
        format!(
            " {name}`{}` = `{}`: {math}.{note}",
            node.ident,
            node.layer.describe()
        )
    }

    /// Runs `generate` and says whether what it generated reads the batch.
    fn with_batch<R>(&self, generate: impl FnOnce() -> R) -> (R, bool) {
        self.reads_batch.set(false);
        let generated = generate();
        (generated, self.reads_batch.replace(false))
    }

    /// The extra parameter and argument of a method that reads the batch.
    fn batch_param(&self, reads: bool, elem: &Ident) -> (TokenStream, TokenStream) {
        if reads {
            (
                quote!(batch: ::chainrule::ndarray::ArrayView2<'_, #elem>),
                quote!(batch),
            )
        } else {
            (quote!(), quote!())
        }
    }

    /// A view of a value for a pass: an input's columns of the `batch` parameter, or a buffer.
    fn read(&self, value: usize) -> TokenStream {
        if self.net.values[value].producer.is_some() {
            let buffer = self.value(value);
            return quote!(self.#buffer.view());
        }
        self.reads_batch.set(true);
        self.input_columns(value, quote!(batch))
    }

    /// A view of a value as the network keeps it: an input's columns of the kept batch, or a
    /// buffer.
    fn stored(&self, value: usize) -> TokenStream {
        if self.net.values[value].producer.is_some() {
            let buffer = self.value(value);
            return quote!(self.#buffer.view());
        }
        self.input_columns(
            value,
            quote!(::chainrule::kept_input(&self.input, self.pass)),
        )
    }

    /// An input's columns of a batch (a view): the whole of it when the network has one input.
    fn input_columns(&self, value: usize, batch: TokenStream) -> TokenStream {
        let inputs = &self.net.inputs;
        if inputs.len() == 1 {
            return batch;
        }
        let mut start = 0;
        for input in inputs {
            let width = self.net.values[input.value].width;
            if input.value == value {
                let (from, to) = (lit(start), lit(start + width));
                return quote!(#batch.slice_move(::chainrule::ndarray::s![.., #from..#to]));
            }
            start += width;
        }
        unreachable!("a value without a producer is an input")
    }

    /// The ReLU that an affine node's forward pass also computes: the one node reading the
    /// affine's output, if that is a ReLU.
    fn fused_relu(&self, node: &CheckedNode) -> Option<&CheckedNode<'_>> {
        if !matches!(node.op.kernels, Kernels::Affine { .. }) {
            return None;
        }
        let mut readers = self
            .net
            .nodes
            .iter()
            .filter(|n| n.inputs.contains(&node.output));
        match (readers.next(), readers.next()) {
            (Some(reader), None) if reader.op.name == "relu" && reader.inputs.len() == 1 => {
                Some(reader)
            }
            _ => None,
        }
    }

    /// Whether this is a ReLU whose forward pass its producer's computes.
    fn relu_fused_into_producer(&self, node: &CheckedNode) -> bool {
        let producer = node
            .inputs
            .first()
            .and_then(|&v| self.net.values[v].producer);
        producer.is_some_and(|p| {
            self.fused_relu(&self.net.nodes[p])
                .is_some_and(|relu| relu.ident == node.ident)
        })
    }

    /// The ReLU whose backward pass this affine node's input-gradient product does as well in
    /// `sgd_step` (`dx = (dy·Wᵀ) ⊙ [y > 0]`): the ReLU producing the affine's input, when the
    /// affine is the only reader of the ReLU's output and the ReLU the only reader of its input,
    /// so that the ReLU's input gradient is set there and nowhere else.
    fn gated_relu(&self, node: &CheckedNode) -> Option<&CheckedNode<'_>> {
        if !matches!(node.op.kernels, Kernels::Affine { .. }) {
            return None;
        }
        let &output = node.inputs.first()?;
        let relu = &self.net.nodes[self.net.values[output].producer?];
        let &input = relu.inputs.first()?;
        let readers = |value: usize| {
            self.net
                .nodes
                .iter()
                .flat_map(|n| &n.inputs)
                .filter(|&&v| v == value)
                .count()
        };
        (relu.op.name == "relu"
            && relu.inputs.len() == 1
            && self.net.values[output].needs_grad
            && self.net.values[input].needs_grad
            && readers(output) == 1
            && readers(input) == 1)
            .then_some(relu)
    }

    /// Whether this is a ReLU whose backward pass the product after it does in `sgd_step`.
    fn gated_into_reader(&self, node: &CheckedNode) -> bool {
        node.op.name == "relu"
            && self.net.nodes.iter().any(|n| {
                self.gated_relu(n)
                    .is_some_and(|relu| relu.ident == node.ident)
            })
    }

    /// The loss node, if the network has one.
    fn loss(&self) -> Option<&CheckedNode<'_>> {
        self.net.nodes.last().filter(|node| node.op.is_loss())
    }

    fn is_loss_output(&self, value: usize) -> bool {
        self.loss().is_some_and(|loss| loss.output == value)
    }

    /// Whether a value has a gradient buffer: it needs a gradient, or it is the output (which
    /// the loss or `backward_from` writes).
    fn has_grad(&self, value: usize) -> bool {
        self.net.values[value].needs_grad || value == self.net.output
    }

    /// The value's name for people: its name in the description, or its node's, or `input`.
    fn value_name(&self, value: usize) -> String {
        let v = &self.net.values[value];
        match (&v.name, v.producer) {
            (Some(name), _) => name.clone(),
            (None, Some(node)) => self.net.nodes[node].ident.clone(),
            (None, None) => "input".to_owned(),
        }
    }

    /// The buffer holding a value.
    fn value(&self, value: usize) -> Ident {
        let v = &self.net.values[value];
        match (v.producer, &v.name) {
            (None, None) => format_ident!("input"),
            (None, Some(name)) => format_ident!("{}_in", name),
            (Some(node), _) => format_ident!("{}_out", self.net.nodes[node].ident),
        }
    }

    /// The buffer holding the gradient with respect to a value.
    fn grad(&self, value: usize) -> Ident {
        let v = &self.net.values[value];
        match (v.producer, &v.name) {
            (None, None) => format_ident!("input_grad"),
            (None, Some(name)) => format_ident!("{}_in_grad", name),
            (Some(node), _) => format_ident!("{}_dout", self.net.nodes[node].ident),
        }
    }

    /// How docs name a value.
    fn value_doc(&self, value: usize) -> String {
        let v = &self.net.values[value];
        match (v.producer, &v.name) {
            (None, None) => "the network's input".to_owned(),
            (None, Some(name)) => format!("the input `{name}`"),
            (Some(_), Some(name)) => format!("`{name}`"),
            (Some(node), None) => format!("`{}`'s output", self.net.nodes[node].ident),
        }
    }
}

/// An integer literal without a suffix, as a person would write it.
fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

fn param_field(node: &CheckedNode, param: &str) -> Ident {
    format_ident!("{}_{}", node.ident, param)
}
