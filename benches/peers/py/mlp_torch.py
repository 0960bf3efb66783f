"""W1-W3 in PyTorch: nn.Sequential of Linear and ReLU, CrossEntropyLoss, optim.SGD; eager, or
with --compile torch.compile (the forward + loss, and the optimizer step, each compiled)."""
from common import (ARGS, MLP, check_mlp_shapes, emit_latency, emit_train, latency_us, make_data,
                    time_steps, wanted)
import torch
from torch import nn

torch.set_num_threads(ARGS.threads)
IMPL = "torch.compile" if ARGS.compile else "torch eager"


def build(params):
    layers = []
    for i, (W, b) in enumerate(params):
        if i > 0:
            layers.append(nn.ReLU())
        lin = nn.Linear(*W.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T))  # Linear keeps (out, in)
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
    return nn.Sequential(*layers)


def measure(name, cfg, model, x, t, one_sample):
    """Times `model` on workload `name`: for `one_sample`, the median µs of a forward pass; else
    SGD steps/s (forward, CrossEntropyLoss, backward, optim.SGD) with the loss before and after.
    With --compile the forward + loss and the optimiser step are each compiled."""
    if name == one_sample:
        fwd = torch.compile(model) if ARGS.compile else model
        with torch.inference_mode():
            emit_latency(IMPL, name, latency_us(cfg["steps"], cfg["warmup"], lambda: fwd(x)))
        return

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


def main():
    for name in wanted(MLP):
        cfg = MLP[name]
        xs, labels, params = make_data(name)
        x, t = torch.from_numpy(xs), torch.from_numpy(labels)
        model = build(params)
        with torch.no_grad():
            h, shapes = x, []
            for layer in model:
                h = layer(h)
                shapes.append(h.shape)
        check_mlp_shapes(name, shapes)

        measure(name, cfg, model, x, t, one_sample="W3")


if __name__ == "__main__":
    main()
