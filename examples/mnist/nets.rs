//! The main job's networks (the ONNX export test reads them too).

use chainrule::network;

network! {
    /// The book's two-layer net.
    pub struct TwoLayerNet {
        affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy
    }
}

network! {
    /// A deeper net, for He initialisation and Adam.
    pub struct DeepNet {
        affine(784, 256) -> relu -> affine(256, 256) -> relu -> affine(256, 256) -> relu
            -> affine(256, 10) -> softmax_cross_entropy
    }
}

network! {
    /// The book's SimpleConvNet (chapter 7): 30 filters of 5×5, a 2×2 max pool, then two affine
    /// layers. `affine(4320, 100)` reads the pool's 30×12×12 as features.
    pub struct ConvNet {
        input(1, 28, 28) -> conv2d(1, 30, 5) -> relu -> max_pool(2)
            -> affine(4320, 100) -> relu -> affine(100, 10) -> softmax_cross_entropy
    }
}

network! {
    /// The book's SimpleConvNet with a batch normalisation after the convolution and after the
    /// first affine layer.
    pub struct ConvBnNet {
        input(1, 28, 28) -> conv2d(1, 30, 5) -> batchnorm -> relu -> max_pool(2)
            -> affine(4320, 100) -> batchnorm -> relu -> affine(100, 10) -> softmax_cross_entropy
    }
}

network! {
    /// The book's DeepConvNet (chapter 8): six 3×3 convolutions, a max pool after every second,
    /// then two affine layers with dropout.
    pub struct DeepConvNet {
        input(1, 28, 28)
            -> conv2d(1, 16, 3, pad = 1) -> relu -> conv2d(16, 16, 3, pad = 1) -> relu -> max_pool(2)
            -> conv2d(16, 32, 3, pad = 1) -> relu -> conv2d(32, 32, 3, pad = 2) -> relu -> max_pool(2)
            -> conv2d(32, 64, 3, pad = 1) -> relu -> conv2d(64, 64, 3, pad = 1) -> relu -> max_pool(2)
            -> affine(1024, 50) -> relu -> dropout(0.5) -> affine(50, 10) -> dropout(0.5)
            -> softmax_cross_entropy
    }
}
