"""W4-W6 in PyTorch: nn.Sequential of Conv2d, ReLU, MaxPool2d(2, 2), Flatten, Linear (NCHW),
CrossEntropyLoss, optim.SGD; eager, or with --compile torch.compile (forward + loss and the
optimizer step each compiled; the model for W5)."""
from common import CONV, check_conv_shapes, make_conv_data, wanted
import torch
from torch import nn
from mlp_torch import measure  # also sets torch's thread count


def build(net, params):
    params, layers, in_c = iter(params), [], 1
    for layer in net:
        if layer[0] == "conv":
            W, b = next(params)
            m = nn.Conv2d(in_c, layer[1], layer[2], padding=layer[3])
            w, in_c = torch.from_numpy(W), layer[1]  # (out_c, in_c, k, k) as in the spec
        elif layer[0] == "affine":
            W, b = next(params)
            if not any(isinstance(m, nn.Linear) for m in layers):
                layers.append(nn.Flatten())
            m, w = nn.Linear(*W.shape), torch.from_numpy(W.T)  # Linear keeps (out, in)
        elif layer[0] == "relu":
            layers.append(nn.ReLU())
            continue
        else:
            layers.append(nn.MaxPool2d(2, 2))
            continue
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(torch.from_numpy(b))
        layers.append(m)
    return nn.Sequential(*layers)


def main():
    for name in wanted(CONV):
        cfg = CONV[name]
        xs, labels, params = make_conv_data(name)
        x, t = torch.from_numpy(xs), torch.from_numpy(labels)
        model = build(cfg["net"], params)
        with torch.no_grad():
            h, shapes = x, []
            for m in model:
                h = m(h)
                if not isinstance(m, nn.Flatten):  # the spec's affine flattens itself
                    shapes.append(h.shape)
        check_conv_shapes(name, shapes)

        measure(name, cfg, model, x, t, one_sample="W5")


if __name__ == "__main__":
    main()
