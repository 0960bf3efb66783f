"""W1-W3 in JAX: jax.jit of the whole training step (forward, value_and_grad, SGD update),
called once per step; W3 is a jitted forward."""
from common import (MLP, check_mlp_shapes, emit_latency, emit_train, latency_us, make_data,
                    time_steps, wanted)
import jax
import jax.numpy as jnp


def layers(params, x):
    """Each layer's output: affine, relu, ..., affine (the scores)."""
    out = []
    for i, (W, b) in enumerate(params):
        if i > 0:
            x = jax.nn.relu(x)
            out.append(x)
        x = x @ W + b
        out.append(x)
    return out


def predict(params, x):
    return layers(params, x)[-1]


def loss(params, x, t):
    logp = jax.nn.log_softmax(predict(params, x))
    return -jnp.take_along_axis(logp, t[:, None], axis=1).mean()


def time_training(name, cfg, loss, params, x, t):
    """Steps/s of SGD on `loss(params, x, t)`, the whole step (forward, value_and_grad, update)
    one jitted call, with the loss before and after; emitted as a JSON line."""
    lr = cfg["lr"]

    @jax.jit
    def step(params, x, t):
        value, grads = jax.value_and_grad(loss)(params, x, t)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), value

    state = {"p": params}

    def one():
        state["p"], _ = step(state["p"], x, t)

    loss0 = float(loss(params, x, t))
    rate = time_steps(cfg["warmup"], cfg["steps"], one,
                      sync=lambda: jax.block_until_ready(state["p"]))
    emit_train("jax.jit", name, rate, loss0, float(loss(state["p"], x, t)))


def main():
    for name in wanted(MLP):
        cfg = MLP[name]
        xs, labels, params = make_data(name)
        x, t = jnp.asarray(xs), jnp.asarray(labels)
        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]
        check_mlp_shapes(name, [h.shape for h in jax.eval_shape(layers, params, x)])

        if name == "W3":
            fwd = jax.jit(predict)
            call = lambda: fwd(params, x).block_until_ready()  # noqa: E731
            emit_latency("jax.jit", name, latency_us(cfg["steps"], cfg["warmup"], call))
            continue

        time_training(name, cfg, loss, params, x, t)


if __name__ == "__main__":
    main()
