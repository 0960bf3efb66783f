//! The baseline a user would write from the book without chainrule: layer objects on ndarray,
//! a fresh array for every intermediate, the input cloned into each affine layer, and every
//! gradient computed (the book's `gradient()` computes the first layer's `dx` too).

use ndarray::{Array1, Array2, ArrayView2, Axis};

pub struct Affine {
    pub w: Array2<f32>,
    pub b: Array1<f32>,
    x: Array2<f32>,
    dw: Array2<f32>,
    db: Array1<f32>,
}

impl Affine {
    pub fn new(w: Array2<f32>) -> Self {
        let (rows, cols) = w.dim();
        Affine {
            b: Array1::zeros(cols),
            x: Array2::zeros((0, rows)),
            dw: Array2::zeros((rows, cols)),
            db: Array1::zeros(cols),
            w,
        }
    }

    fn forward(&mut self, x: &Array2<f32>) -> Array2<f32> {
        self.x = x.clone();
        x.dot(&self.w) + &self.b
    }

    fn backward(&mut self, dout: &Array2<f32>) -> Array2<f32> {
        self.dw = self.x.t().dot(dout);
        self.db = dout.sum_axis(Axis(0));
        dout.dot(&self.w.t())
    }
}

fn relu(x: &Array2<f32>) -> (Array2<f32>, Array2<bool>) {
    let mask = x.mapv(|v| v <= 0.0);
    (x.mapv(|v| v.max(0.0)), mask)
}

/// The book's two-layer net (and its deeper relatives): affine → relu → ... → affine → softmax
/// with cross-entropy.
pub struct Net {
    pub layers: Vec<Affine>,
    masks: Vec<Array2<bool>>,
}

impl Net {
    pub fn new(weights: Vec<Array2<f32>>) -> Self {
        Net {
            layers: weights.into_iter().map(Affine::new).collect(),
            masks: Vec::new(),
        }
    }

    /// The scores for `x`.
    pub fn predict(&mut self, x: &Array2<f32>) -> Array2<f32> {
        self.masks.clear();
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            h = layer.forward(&h);
            if i < last {
                let (out, mask) = relu(&h);
                self.masks.push(mask);
                h = out;
            }
        }
        h
    }

    /// Forward, softmax-with-loss, backward; returns the loss.
    pub fn gradient(&mut self, x: ArrayView2<f32>, t: &[usize]) -> f32 {
        let scores = self.predict(&x.to_owned());
        let n = scores.nrows() as f32;
        let mut y = scores.clone();
        let mut loss = 0.0;
        for (mut row, &label) in y.rows_mut().into_iter().zip(t) {
            let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            row.mapv_inplace(|v| (v - max).exp());
            let sum = row.sum();
            row.mapv_inplace(|v| v / sum);
            loss -= (row[label] + 1e-7).ln();
        }
        let mut dout = y;
        for (mut row, &label) in dout.rows_mut().into_iter().zip(t) {
            row[label] -= 1.0;
        }
        dout /= n;
        for i in (0..self.layers.len()).rev() {
            dout = self.layers[i].backward(&dout);
            if i > 0 {
                let mask = &self.masks[i - 1];
                dout.zip_mut_with(mask, |d, &m| {
                    if m {
                        *d = 0.0
                    }
                });
            }
        }
        loss / n
    }

    /// `w -= lr·dw`, `b -= lr·db`.
    pub fn update(&mut self, lr: f32) {
        for layer in &mut self.layers {
            layer.w -= &(&layer.dw * lr);
            layer.b -= &(&layer.db * lr);
        }
    }
}
