//! Stage 4: the generated code. The only stage that builds Rust syntax.
//!
//! For each network it emits a struct (parameters public, activation and gradient buffers private),
//! one small method per node and pass whose doc comment names the source layer and the math it
//! does, `forward`/`backward` that call them in topological and reverse order, and impls of the
//! runtime's `Network` and (with a loss) `Trainable` traits.

use proc_macro2::{Span, TokenStream};
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
    let definition = Generator { net, ty: &ty }.generate();
    match &def.form {
        Form::Item { attrs, vis, .. } => {
            let (fields, rest) = definition;
            quote! {
                #(#attrs)*
                #vis struct #ty { #fields }
                #rest
            }
        }
        Form::Expr => {
            let (fields, rest) = definition;
            quote! {
                {
                    struct #ty { #fields }
                    #rest
                    <#ty as ::core::default::Default>::default()
                }
            }
        }
    }
}

struct Generator<'a> {
    net: &'a Checked<'a>,
    ty: &'a Ident,
}

impl Generator<'_> {
    /// The struct's fields, and everything after the struct.
    fn generate(&self) -> (TokenStream, TokenStream) {
        let net = self.net;
        let ty = self.ty;
        let elem = &net.elem;
        let loss = self.loss();

        // Parameters: one public field each.
        let mut param_fields = Vec::new();
        let mut param_news = Vec::new();
        let mut param_names = Vec::new();
        let mut param_inits = Vec::new();
        for node in &net.nodes {
            for param in &node.params {
                let field = param_field(node, param.name);
                let name = format!("{}.{}", node.ident, param.name);
                let rank = format_ident!("Ix{}", param.shape.len());
                let dims: Vec<String> = param.shape.iter().map(usize::to_string).collect();
                let doc = format!(
                    " `{}`'s {}: {} (`{name}`).",
                    node.layer.describe(),
                    param.name,
                    dims.join(" × ")
                );
                let shape = param.shape.iter().copied().map(lit);
                param_fields.push(quote! {
                    #[doc = #doc]
                    pub #field: ::chainrule::Param<#elem, ::chainrule::ndarray::#rank>
                });
                param_news.push(quote! { #field: ::chainrule::Param::zeros(#name, (#(#shape,)*)) });
                let how = match param.init {
                    ResolvedInit::Weight { fan_in } => {
                        let fan_in = lit(fan_in);
                        quote!(::chainrule::ParamInit::Weight { fan_in: #fan_in })
                    }
                    ResolvedInit::Zero => quote!(::chainrule::ParamInit::Zero),
                };
                param_inits.push(quote! { self.#field.init(#how, init, &mut rng); });
                param_names.push((name, field));
            }
        }

        // Buffers: every value but the loss's output, and a gradient for every value that needs one.
        let mut buffer_fields = Vec::new();
        let mut buffer_news = Vec::new();
        let mut buffer_resizes = Vec::new();
        for (v, value) in net.values.iter().enumerate() {
            if self.is_loss_output(v) {
                continue;
            }
            let width = value.width;
            let width_lit = lit(width);
            let mut add = |field: Ident, doc: String| {
                buffer_fields.push(quote! {
                    #[doc = #doc]
                    #field: ::chainrule::ndarray::Array2<#elem>
                });
                buffer_news
                    .push(quote! { #field: ::chainrule::ndarray::Array2::zeros((0, #width_lit)) });
                buffer_resizes
                    .push(quote! { ::chainrule::resize_rows(&mut self.#field, rows, #width_lit); });
            };
            add(
                self.value(v),
                format!(" Values of {}: batch × {width}.", self.value_doc(v)),
            );
            if self.has_grad(v) {
                add(
                    self.grad(v),
                    format!(
                        " The loss's gradient with respect to {}.",
                        self.value_doc(v)
                    ),
                );
            }
        }
        let loss_ready_field = loss.map(|_| {
            quote! {
                /// Whether the buffers hold a loss's forward pass, ready for backward.
                loss_ready: bool
            }
        });
        let loss_ready_new = loss.map(|_| quote!(loss_ready: false));
        let loss_ready_clear = loss.map(|_| quote!(self.loss_ready = false;));

        // One method per node and pass.
        let mut methods = Vec::new();
        let mut forward_calls = Vec::new();
        let mut backward_calls = Vec::new();
        for node in &net.nodes {
            if node.op.is_loss() {
                continue;
            }
            let forward = format_ident!("forward_{}", node.ident);
            let (doc, body) = self.forward_body(node);
            methods.push(quote! {
                #[doc = #doc]
                #[inline]
                fn #forward(&mut self) { #body }
            });
            forward_calls.push(quote!(self.#forward();));
            // Without a loss there is no backward pass, and no gradient buffers.
            if let Some((doc, body)) = loss.and_then(|_| self.backward_body(node)) {
                let backward = format_ident!("backward_{}", node.ident);
                methods.push(quote! {
                    #[doc = #doc]
                    #[inline]
                    fn #backward(&mut self) { #body }
                });
                backward_calls.push(quote!(self.#backward();));
            }
        }
        backward_calls.reverse();

        let name = &net.name;
        let input_width = lit(net.values[0].width);
        let output_width = lit(net.values[net.output].width);
        let param_count = lit(net.param_count);
        let dot = dot::render(net);
        let output = self.value(net.output);
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
        let input = self.value(0);

        let trainable = loss.map(|loss| self.trainable(loss, backward_calls));

        let fields = quote! {
            #(#param_fields,)*
            #(#buffer_fields,)*
            #loss_ready_field
        };
        let rest = quote! {
            impl #ty {
                /// A network with parameters drawn by `init` from a generator seeded by `seed`.
                pub fn new(init: ::chainrule::Init, seed: u64) -> Self {
                    let mut net = #ty {
                        #(#param_news,)*
                        #(#buffer_news,)*
                        #loss_ready_new
                    };
                    ::chainrule::Network::init(&mut net, init, seed);
                    net
                }

                /// Sizes the buffers for `x`'s batch (allocating only when the batch size changes)
                /// and copies `x` in.
                fn prepare(&mut self, x: ::chainrule::ndarray::ArrayView2<'_, #elem>) {
                    let rows = x.nrows();
                    #(#buffer_resizes)*
                    self.#input.assign(&x);
                    #loss_ready_clear
                }

                /// The forward pass, in topological order.
                fn run_forward(&mut self) {
                    #(#forward_calls)*
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
                const INPUT: usize = #input_width;
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
                    ::chainrule::check_input(#name, &x, #input_width)?;
                    self.prepare(x);
                    self.run_forward();
                    ::core::result::Result::Ok(self.#output.view())
                }

                fn output(&self) -> ::chainrule::ndarray::ArrayView2<'_, #elem> {
                    self.#output.view()
                }

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
            }

            #trainable
        };
        (fields, rest)
    }

    /// The `Trainable` impl and the loss method.
    fn trainable(&self, loss: &CheckedNode, backward_calls: Vec<TokenStream>) -> TokenStream {
        let net = self.net;
        let ty = self.ty;
        let elem = &net.elem;
        let name = &net.name;
        let input_width = lit(net.values[0].width);
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
        let x = self.value(loss.inputs[0]);
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
                fn #method(&mut self, t: <Self as ::chainrule::Trainable>::Targets<'_>) -> #elem {
                    ::chainrule::kernels::#kernel(self.#x.view(), t, self.#dx.view_mut())
                }
            }

            impl ::chainrule::Trainable for #ty {
                type Targets<'t> = #targets_ty;

                fn loss(
                    &mut self,
                    x: ::chainrule::ndarray::ArrayView2<'_, #elem>,
                    t: Self::Targets<'_>,
                ) -> ::chainrule::Result<#elem> {
                    ::chainrule::check_input(#name, &x, #input_width)?;
                    ::chainrule::Target::<#elem>::check(
                        &t,
                        #name,
                        x.nrows(),
                        <Self as ::chainrule::Network>::OUTPUT,
                    )?;
                    self.prepare(x);
                    self.run_forward();
                    let loss = self.#method(t);
                    self.loss_ready = true;
                    ::core::result::Result::Ok(loss)
                }

                fn backward(&mut self) -> ::chainrule::Result<()> {
                    if !self.loss_ready {
                        return ::core::result::Result::Err(::chainrule::Error::BackwardBeforeLoss);
                    }
                    #(#backward_calls)*
                    ::core::result::Result::Ok(())
                }
            }
        }
    }

    /// The doc comment and body of a node's forward method.
    fn forward_body(&self, node: &CheckedNode) -> (String, TokenStream) {
        let x = self.value(node.inputs[0]);
        let y = self.value(node.output);
        let widths = format!(
            " {} → {} features.",
            self.net.values[node.inputs[0]].width, self.net.values[node.output].width
        );
        match node.op.kernels {
            Kernels::Affine {
                forward,
                forward_math,
                ..
            } => {
                let kernel = format_ident!("{forward}");
                let (w, b) = (param_field(node, "weight"), param_field(node, "bias"));
                (
                    self.node_doc(node, forward_math, &widths),
                    quote! {
                        ::chainrule::kernels::#kernel(
                            self.#x.view(), self.#w.value(), self.#b.value(), self.#y.view_mut(),
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
                (
                    self.node_doc(node, forward_math, &widths),
                    quote!(::chainrule::kernels::#kernel(self.#x.view(), self.#y.view_mut());),
                )
            }
            Kernels::Loss { .. } => unreachable!("losses run in `loss`, not in the forward pass"),
        }
    }

    /// The doc comment and body of a node's backward method; `None` when nothing upstream needs a
    /// gradient from it.
    fn backward_body(&self, node: &CheckedNode) -> Option<(String, TokenStream)> {
        let input = node.inputs[0];
        let x = self.value(input);
        let input_needs_grad = self.has_grad(input);
        let dx = self.grad(input);
        let y = self.value(node.output);
        let dy = self.grad(node.output);
        match node.op.kernels {
            Kernels::Affine {
                backward_params,
                backward_input,
                backward_math,
                ..
            } => {
                let (w, b) = (param_field(node, "weight"), param_field(node, "bias"));
                let params = format_ident!("{backward_params}");
                let mut body = quote! {
                    ::chainrule::kernels::#params(
                        self.#x.view(), self.#dy.view(), self.#w.grad_mut(), self.#b.grad_mut(),
                    );
                };
                let mut note = String::new();
                if input_needs_grad {
                    let input_kernel = format_ident!("{backward_input}");
                    body.extend(quote! {
                        ::chainrule::kernels::#input_kernel(
                            self.#w.value(), self.#dy.view(), self.#dx.view_mut(),
                        );
                    });
                } else {
                    note = format!(
                        " dx is not computed: nothing needs the gradient of {}.",
                        self.value_doc(input)
                    );
                }
                Some((self.node_doc(node, backward_math, &note), body))
            }
            Kernels::Elementwise {
                backward,
                backward_math,
                ..
            } => {
                if !input_needs_grad {
                    return None;
                }
                let kernel = format_ident!("{backward}");
                Some((
                    self.node_doc(node, backward_math, ""),
                    quote! {
                        ::chainrule::kernels::#kernel(
                            self.#y.view(), self.#dy.view(), self.#dx.view_mut(),
                        );
                    },
                ))
            }
            Kernels::Loss { .. } => unreachable!("the loss's gradient comes with the loss"),
        }
    }

    fn node_doc(&self, node: &CheckedNode, math: &str, note: &str) -> String {
        format!(
            " `{}` = `{}`: {math}.{note}",
            node.ident,
            node.layer.describe()
        )
    }

    /// The loss node, if the network has one.
    fn loss(&self) -> Option<&CheckedNode<'_>> {
        self.net.nodes.last().filter(|node| node.op.is_loss())
    }

    fn is_loss_output(&self, value: usize) -> bool {
        self.loss().is_some_and(|loss| loss.output == value)
    }

    /// Whether a value has a gradient buffer: the network has a loss, and the value needs a
    /// gradient or the loss writes one into it.
    fn has_grad(&self, value: usize) -> bool {
        self.loss()
            .is_some_and(|loss| self.net.values[value].needs_grad || loss.inputs.contains(&value))
    }

    /// The buffer holding a value.
    fn value(&self, value: usize) -> Ident {
        match self.net.values[value].producer {
            None => format_ident!("input"),
            Some(node) => format_ident!("{}_out", self.net.nodes[node].ident),
        }
    }

    /// The buffer holding the loss's gradient with respect to a value.
    fn grad(&self, value: usize) -> Ident {
        match self.net.values[value].producer {
            None => format_ident!("input_grad"),
            Some(node) => format_ident!("{}_dout", self.net.nodes[node].ident),
        }
    }

    /// How docs name a value.
    fn value_doc(&self, value: usize) -> String {
        match self.net.values[value].producer {
            None => "the network's input".to_owned(),
            Some(node) => format!("`{}`'s output", self.net.nodes[node].ident),
        }
    }
}

/// An integer literal without a suffix, as a person would write it.
fn lit(n: usize) -> proc_macro2::Literal {
    proc_macro2::Literal::usize_unsuffixed(n)
}

fn param_field(node: &CheckedNode, param: &str) -> Ident {
    format_ident!("{}_{}", node.ident, param)
}
