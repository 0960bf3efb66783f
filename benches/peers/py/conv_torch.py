"""W4-W6 in PyTorch: nn.Sequential of Conv2d, ReLU, MaxPool2d(2, 2), Flatten, Linear (NCHW),
CrossEntropyLoss, optim.SGD; eager, or with --compile torch.compile (forward + loss and the
optimizer step each compiled; the model for W5)."""
from common import (ARGS, CONV, check_conv_shapes, emit_latency, emit_train, latency_us,
                    make_conv_data, time_steps, wanted)
import torch
from torch import nn

torch.set_num_threads(ARGS.threads)
IMPL = "torch.compile" if ARGS.compile else "torch eager"


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

        if name == "W5":
            fwd = torch.compile(model) if ARGS.compile else model
            with torch.inference_mode():
                emit_latency(IMPL, name, latency_us(cfg["steps"], cfg["warmup"], lambda: fwd(x)))
            continue

        loss_fn = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])

        def loss_of(x, t):
            return loss_fn(model(x), t)

        opt_step = opt.step
        if ARGS.compile:
            loss_of, opt_step = torch.compile(loss_of), torch.compile(opt.step)

        def step():
            opt.zero_grad(set_to_none=True)
            loss_of(x, t).backward()
            opt_step()

        with torch.no_grad():
            loss0 = loss_fn(model(x), t).item()
        rate = time_steps(cfg["warmup"], cfg["steps"], step)
        with torch.no_grad():
            loss1 = loss_fn(model(x), t).item()
        emit_train(IMPL, name, rate, loss0, loss1)


if __name__ == "__main__":
    main()
