use ndarray::{Array, ArrayViewD, ArrayViewMut, Dimension, IntoDimension, Ix2};

use crate::element::Element;
use crate::gemm::{ColumnCopy, Weights};
use crate::precision::WeightPrecision;

/// A trainable parameter: its value and the gradient of the loss with respect to it, of equal shape.
///
/// Both arrays are kept in standard (row-major) layout, so optimisers can treat them as flat slices.
#[derive(Debug, Clone)]
pub struct Param<T, D: Dimension> {
    name: &'static str,
    dim: D,
    value: Array<T, D>,
    grad: Array<T, D>,
    /// For a weight matrix read by one-row products: a copy of `value` laid out for them, dropped
    /// whenever `value` is lent out mutably.
    columns: ColumnCopy<T>,
}

/// A read-only look at one parameter, for code that does not know its dimensionality.
#[derive(Debug, Clone, Copy)]
pub struct ParamRef<'a, T> {
    /// The parameter's name, e.g. `affine0.weight`.
    pub name: &'static str,
    /// Its shape, e.g. `[784, 50]`.
    pub shape: &'a [usize],
    /// Its value, row-major.
    pub value: &'a [T],
    /// Its gradient, row-major.
    pub grad: &'a [T],
}

/// A mutable look at one parameter: what an optimiser works on.
#[derive(Debug)]
pub struct ParamMut<'a, T> {
    /// The parameter's name, e.g. `affine0.weight`.
    pub name: &'static str,
    /// Its shape, e.g. `[784, 50]`.
    pub shape: &'a [usize],
    /// Its value, row-major.
    pub value: &'a mut [T],
    /// Its gradient, row-major.
    pub grad: &'a mut [T],
}

impl<'a, T> ParamRef<'a, T> {
    /// The value as an n-dimensional array view.
    pub fn value_array(&self) -> ArrayViewD<'a, T> {
        ArrayViewD::from_shape(self.shape, self.value)
            .expect("a parameter's slice matches its shape")
    }

    /// The gradient as an n-dimensional array view.
    pub fn grad_array(&self) -> ArrayViewD<'a, T> {
        ArrayViewD::from_shape(self.shape, self.grad)
            .expect("a parameter's slice matches its shape")
    }
}

impl<T: Element, D: Dimension> Param<T, D> {
    /// A parameter of the given shape, value and gradient all zero.
    pub fn zeros<Sh: IntoDimension<Dim = D>>(name: &'static str, shape: Sh) -> Self {
        let dim = shape.into_dimension();
        Param {
            name,
            value: Array::zeros(dim.clone()),
            grad: Array::zeros(dim.clone()),
            dim,
            columns: ColumnCopy::default(),
        }
    }

    /// The name, e.g. `affine0.weight`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The value.
    pub fn value(&self) -> ndarray::ArrayView<'_, T, D> {
        self.value.view()
    }

    /// The value, to change in place (its layout stays row-major).
    pub fn value_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        self.columns.invalidate();
        self.value.view_mut()
    }

    /// The gradient from the last backward pass.
    pub fn grad(&self) -> ndarray::ArrayView<'_, T, D> {
        self.grad.view()
    }

    /// The gradient, for kernels to write into.
    pub fn grad_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        self.grad.view_mut()
    }

    /// A read-only look without the dimension type.
    pub fn view(&self) -> ParamRef<'_, T> {
        ParamRef {
            name: self.name,
            shape: self.value.shape(),
            value: self.value.as_slice().expect("parameters are row-major"),
            grad: self.grad.as_slice().expect("parameters are row-major"),
        }
    }

    /// A mutable look without the dimension type, for optimisers.
    pub fn view_mut(&mut self) -> ParamMut<'_, T> {
        self.columns.invalidate();
        ParamMut {
            name: self.name,
            shape: self.dim.slice(),
            value: self.value.as_slice_mut().expect("parameters are row-major"),
            grad: self.grad.as_slice_mut().expect("parameters are row-major"),
        }
    }
}

impl<T: Element> Param<T, Ix2> {
    /// The value as the affine kernels read it, with the copy that one-row products (batch 1)
    /// switch to once the weight has served a few of them unchanged: dot products over columns
    /// laid out one after another instead of sums over strided rows. The copy is
    /// allocated at the first one-row product, made after a few more, and remade after every
    /// change to the value. Its sums run in another order, so results may differ from the
    /// first few calls' in the last bits.
    pub fn weights(&mut self) -> Weights<'_, T> {
        Weights {
            value: self.value.view(),
            columns: Some(&mut self.columns),
        }
    }

    /// How one-row products (a batch of one sample) read this weight from the next one on; see
    /// [`Network::set_one_sample_weights`](crate::Network::set_one_sample_weights), which sets
    /// it for every weight of a network and checks that it applies.
    pub fn set_one_row_precision(&mut self, precision: WeightPrecision) {
        self.columns.set_precision(precision);
    }
}
