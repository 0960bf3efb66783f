"""W1-W3 in numpy with the layer classes of *Deep Learning from Scratch* ch. 5 (Affine, Relu,
SoftmaxWithLoss), float32 throughout. The first Affine skips its input gradient (never needed);
W1 also gets a "book-exact (+dX1)" row that computes it, as the book does."""
from common import (MLP, check_mlp_shapes, emit_latency, emit_train, latency_us, make_data,
                    time_steps, wanted)
import numpy as np


class Affine:
    def __init__(self, W, b, need_dx=True):
        self.W, self.b, self.need_dx = W, b, need_dx

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return dout @ self.W.T if self.need_dx else None


class Relu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout = dout.copy()
        dout[self.mask] = 0
        return dout


class SoftmaxWithLoss:
    """Softmax and cross-entropy, against label indices."""

    def forward(self, x, t):
        self.t = t
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        n = x.shape[0]
        return -np.log(self.y[np.arange(n), t] + 1e-7).sum() / n

    def backward(self):
        n = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(n), self.t] -= 1
        return dx / n


class Layers:
    """The book's network classes' common part: `self.layers` in order, then `self.last`
    (SoftmaxWithLoss); SGD updates every layer that has a weight gradient."""

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last.forward(self.predict(x), t)

    def sgd_step(self, x, t, lr):
        self.loss(x, t)
        dout = self.last.backward()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        for layer in self.layers:
            if hasattr(layer, "dW"):
                layer.W -= lr * layer.dW
                layer.b -= lr * layer.db

    def shapes(self, x):
        out = []
        for layer in self.layers:
            x = layer.forward(x)
            out.append(x.shape)
        return out


class Net(Layers):
    def __init__(self, params, skip_dx1=True):
        self.layers = []
        for i, (W, b) in enumerate(params):
            if i > 0:
                self.layers.append(Relu())
            self.layers.append(Affine(W.copy(), b.copy(), need_dx=not (skip_dx1 and i == 0)))
        self.last = SoftmaxWithLoss()


def main():
    for name in wanted(MLP):
        cfg = MLP[name]
        x, labels, params = make_data(name)
        check_mlp_shapes(name, Net(params).shapes(x))
        if name == "W3":
            net = Net(params)
            emit_latency("numpy", name, latency_us(cfg["steps"], cfg["warmup"], lambda: net.predict(x)))
            continue
        variants = [("", True)] + ([(" book-exact (+dX1)", False)] if name == "W1" else [])
        for variant, skip_dx1 in variants:
            net = Net(params, skip_dx1)
            loss0 = net.loss(x, labels)
            rate = time_steps(cfg["warmup"], cfg["steps"], lambda: net.sgd_step(x, labels, cfg["lr"]))
            emit_train("numpy", name, rate, loss0, net.loss(x, labels), variant)


if __name__ == "__main__":
    main()
