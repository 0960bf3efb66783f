"""W4-W6 in numpy with the layers of *Deep Learning from Scratch* ch. 7: im2col/col2im (a strided
copy per kernel offset), Convolution (im2col, then one matrix product), Pooling (im2col, max and
argmax), Affine (flattens a 4-D input), Relu, SoftmaxWithLoss. Changes from the book: buffers
keep the input's dtype (float32; the book's np.zeros would make them float64), and the first
convolution skips its input gradient (dcol and col2im), which is never needed."""
from common import (CONV, check_conv_shapes, emit_latency, emit_train, latency_us,
                    make_conv_data, time_steps, wanted)
import numpy as np
from mlp_numpy import Layers, Relu, SoftmaxWithLoss


def im2col(x, fh, fw, pad):
    """(N, C, H, W) -> (N·out_h·out_w, C·fh·fw), stride 1."""
    n, c, h, w = x.shape
    oh, ow = h + 2 * pad - fh + 1, w + 2 * pad - fw + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    col = np.zeros((n, c, fh, fw, oh, ow), dtype=x.dtype)
    for i in range(fh):
        for j in range(fw):
            col[:, :, i, j] = img[:, :, i:i + oh, j:j + ow]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)


def col2im(col, shape, fh, fw, pad):
    """The adjoint of im2col: sums each patch entry back into its pixel."""
    n, c, h, w = shape
    oh, ow = h + 2 * pad - fh + 1, w + 2 * pad - fw + 1
    col = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=col.dtype)
    for i in range(fh):
        for j in range(fw):
            img[:, :, i:i + oh, j:j + ow] += col[:, :, i, j]
    return img[:, :, pad:pad + h, pad:pad + w]


def pool_windows(x):
    """(N, C, H, W) -> (N·oh·ow·C, 4) of 2x2 stride-2 windows, as the book's Pooling forms them
    (im2col with stride 2)."""
    n, c, h, w = x.shape
    oh, ow = h // 2, w // 2
    col = np.zeros((n, c, 2, 2, oh, ow), dtype=x.dtype)
    for i in range(2):
        for j in range(2):
            col[:, :, i, j] = x[:, :, i:i + 2 * oh:2, j:j + 2 * ow:2]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(-1, 4)


class Convolution:
    def __init__(self, W, b, pad, need_dx=True):
        self.W, self.b, self.pad, self.need_dx = W, b, pad, need_dx

    def forward(self, x):
        fn, _, fh, fw = self.W.shape
        n, _, h, w = x.shape
        oh, ow = h + 2 * self.pad - fh + 1, w + 2 * self.pad - fw + 1
        self.x, self.col = x, im2col(x, fh, fw, self.pad)
        self.col_W = self.W.reshape(fn, -1).T
        out = self.col @ self.col_W + self.b
        return out.reshape(n, oh, ow, fn).transpose(0, 3, 1, 2)

    def backward(self, dout):
        fn, c, fh, fw = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, fn)
        self.db = dout.sum(axis=0)
        self.dW = (self.col.T @ dout).T.reshape(fn, c, fh, fw)
        if not self.need_dx:
            return None
        return col2im(dout @ self.col_W.T, self.x.shape, fh, fw, self.pad)


class Pooling:
    """Max pool 2x2, stride 2."""

    def forward(self, x):
        n, c, h, w = x.shape
        self.x = x
        col = pool_windows(x)
        self.arg_max = col.argmax(axis=1)
        return col.max(axis=1).reshape(n, h // 2, w // 2, c).transpose(0, 3, 1, 2)

    def backward(self, dout):
        n, c, h, w = self.x.shape
        flat = dout.transpose(0, 2, 3, 1).ravel()
        dmax = np.zeros((flat.size, 4), dtype=dout.dtype)
        dmax[np.arange(flat.size), self.arg_max] = flat
        # The windows back into the image: col2im with stride 2 (windows do not overlap).
        dcol = dmax.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 3, 4, 5, 1, 2)
        dx = np.zeros_like(self.x)
        for i in range(2):
            for j in range(2):
                dx[:, :, i:i + 2 * (h // 2):2, j:j + 2 * (w // 2):2] = dcol[:, :, i, j]
        return dx


class Affine:
    """ch. 7's Affine: flattens a 4-D input, and gives the gradient back in its shape."""

    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return (dout @ self.W.T).reshape(self.shape)


class ConvNet(Layers):
    def __init__(self, net, params):
        params, self.layers = iter(params), []
        for i, layer in enumerate(net):
            if layer[0] == "conv":
                W, b = next(params)
                self.layers.append(Convolution(W.copy(), b.copy(), layer[3], need_dx=i > 0))
            elif layer[0] == "affine":
                W, b = next(params)
                self.layers.append(Affine(W.copy(), b.copy()))
            elif layer[0] == "relu":
                self.layers.append(Relu())
            else:
                self.layers.append(Pooling())
        self.last = SoftmaxWithLoss()


def main():
    for name in wanted(CONV):
        cfg = CONV[name]
        x, labels, params = make_conv_data(name)
        net = ConvNet(cfg["net"], params)
        check_conv_shapes(name, net.shapes(x))
        if name == "W5":
            emit_latency("numpy", name, latency_us(cfg["steps"], cfg["warmup"], lambda: net.predict(x)))
            continue
        loss0 = net.loss(x, labels)
        rate = time_steps(cfg["warmup"], cfg["steps"], lambda: net.sgd_step(x, labels, cfg["lr"]))
        emit_train("numpy", name, rate, loss0, net.loss(x, labels))


if __name__ == "__main__":
    main()
