//! A network written by hand, without the macro: `y = x·W + b` with `W` 2×1 and `b` of length 1,
//! so optimiser tests can set values and gradients directly.

#![allow(dead_code)]

use chainrule_runtime::__private::{check_input, resize_rows, unknown_param};
use chainrule_runtime::Param;
use chainrule_runtime::kernels::{affine_backward_params, affine_forward};
use chainrule_runtime::{Element, Init, Network, ParamInit, ParamMut, ParamRef, Result, init};
use ndarray::{Array2, ArrayView2, Ix1, Ix2};

/// `y = x·W + b`: a weight `w` (2×1, two axes, so weight decay applies) and a bias `b` (one axis,
/// so it does not).
#[derive(Debug, Clone)]
pub struct Toy<T: Element> {
    pub w: Param<T, Ix2>,
    pub b: Param<T, Ix1>,
    input: Array2<T>,
    out: Array2<T>,
}

impl<T: Element> Toy<T> {
    /// `W = [[w0], [w1]]`, `b = [b]`, gradients zero.
    pub fn new(w: [f64; 2], b: f64) -> Self {
        Toy::named(["w", "b"], w, b)
    }

    /// The same with other parameter names: to an optimiser, another network.
    pub fn named([w_name, b_name]: [&'static str; 2], [w0, w1]: [f64; 2], b: f64) -> Self {
        let mut toy = Toy {
            w: Param::zeros(w_name, (2, 1)),
            b: Param::zeros(b_name, 1),
            input: Array2::zeros((0, 2)),
            out: Array2::zeros((0, 1)),
        };
        toy.set_values([w0, w1, b]);
        toy
    }

    /// Sets `[w0, w1, b]`.
    pub fn set_values(&mut self, [w0, w1, b]: [f64; 3]) {
        let mut w = self.w.value_mut();
        w[[0, 0]] = T::from_f64(w0);
        w[[1, 0]] = T::from_f64(w1);
        self.b.value_mut()[0] = T::from_f64(b);
    }

    /// Sets the gradients `[∂L/∂w0, ∂L/∂w1, ∂L/∂b]`, as a backward pass would.
    pub fn set_grads(&mut self, [g0, g1, gb]: [f64; 3]) {
        let mut g = self.w.grad_mut();
        g[[0, 0]] = T::from_f64(g0);
        g[[1, 0]] = T::from_f64(g1);
        self.b.grad_mut()[0] = T::from_f64(gb);
    }

    /// `[w0, w1, b]`.
    pub fn values(&self) -> [f64; 3] {
        let w = self.w.value();
        [
            w[[0, 0]].to_f64(),
            w[[1, 0]].to_f64(),
            self.b.value()[0].to_f64(),
        ]
    }

    /// `[∂L/∂w0, ∂L/∂w1, ∂L/∂b]`.
    pub fn grads(&self) -> [f64; 3] {
        let g = self.w.grad();
        [
            g[[0, 0]].to_f64(),
            g[[1, 0]].to_f64(),
            self.b.grad()[0].to_f64(),
        ]
    }
}

impl<T: Element> Network for Toy<T> {
    type Elem = T;
    const NAME: &'static str = "Toy";
    const INPUT: usize = 2;
    const OUTPUT: usize = 1;
    const PARAMS: usize = 3;
    const PARAM_NAMES: &'static [&'static str] = &["w", "b"];
    const DOT: &'static str = "digraph Toy { x -> affine -> y }";
    const TOPOLOGY: &'static str = "v0 = input(2); v1 = affine(in = 2, out = 1)(v0)";
    const GRAPH: chainrule_runtime::graph::Graph = chainrule_runtime::graph::Graph {
        name: "Toy",
        values: &[&[2], &[1]],
        inputs: &[chainrule_runtime::graph::GraphInput {
            name: "input",
            value: 0,
        }],
        nodes: &[chainrule_runtime::graph::GraphNode {
            op: "affine",
            name: "affine0",
            args: &[
                chainrule_runtime::graph::GraphArg {
                    name: "in",
                    value: chainrule_runtime::graph::ArgValue::Whole(2),
                },
                chainrule_runtime::graph::GraphArg {
                    name: "out",
                    value: chainrule_runtime::graph::ArgValue::Whole(1),
                },
            ],
            inputs: &[0],
            output: 1,
            loss: false,
        }],
        output: 1,
    };
    const PARAM_BYTES: usize = 3 * std::mem::size_of::<T>();
    const ACTIVATION_BYTES_INFERENCE: usize = 3 * std::mem::size_of::<T>();
    const ACTIVATION_BYTES_TRAINING: usize = 2 * std::mem::size_of::<T>();
    const FLOPS_FORWARD: u64 = 5;
    const FLOPS_TRAINING: u64 = 15;

    fn init(&mut self, how: Init, seed: u64) {
        let mut rng = init::rng(seed);
        self.w.init(ParamInit::Weight { fan_in: 2 }, how, &mut rng);
        self.b.init(ParamInit::Zero, how, &mut rng);
    }

    fn forward(&mut self, x: ArrayView2<'_, T>) -> Result<ArrayView2<'_, T>> {
        check_input(Self::NAME, &x, Self::INPUT)?;
        resize_rows(&mut self.out, x.nrows(), Self::OUTPUT);
        self.input = x.to_owned();
        affine_forward(x, self.w.value(), self.b.value(), self.out.view_mut());
        Ok(self.out.view())
    }

    fn output(&self) -> ArrayView2<'_, T> {
        self.out.view()
    }

    fn backward_from(&mut self, dy: ArrayView2<'_, T>) -> Result<()> {
        affine_backward_params(self.input.view(), dy, self.w.grad_mut(), self.b.grad_mut());
        Ok(())
    }

    fn param(&self, name: &str) -> Result<ParamRef<'_, T>> {
        match name {
            "w" => Ok(self.w.view()),
            "b" => Ok(self.b.view()),
            _ => Err(unknown_param(Self::NAME, name, Self::PARAM_NAMES)),
        }
    }

    fn param_mut(&mut self, name: &str) -> Result<ParamMut<'_, T>> {
        match name {
            "w" => Ok(self.w.view_mut()),
            "b" => Ok(self.b.view_mut()),
            _ => Err(unknown_param(Self::NAME, name, Self::PARAM_NAMES)),
        }
    }

    fn for_each_param(&self, f: &mut dyn FnMut(ParamRef<'_, T>)) {
        f(self.w.view());
        f(self.b.view());
    }

    fn for_each_param_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_, T>)) {
        f(self.w.view_mut());
        f(self.b.view_mut());
    }
}
