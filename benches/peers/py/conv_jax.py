"""W4-W6 in JAX: lax.conv_general_dilated (NCHW / OIHW), lax.reduce_window max pooling, and
jax.jit of the whole training step (forward, value_and_grad, SGD), called once per step; W5 is
a jitted forward."""
from common import CONV, check_conv_shapes, emit_latency, latency_us, make_conv_data, wanted
import jax
import jax.numpy as jnp
from jax import lax
from mlp_jax import time_training


def layers(net, params, x):
    """Each layer's output, in order."""
    params, out = iter(params), []
    for layer in net:
        if layer[0] == "conv":
            W, b = next(params)
            pad = layer[3]
            x = lax.conv_general_dilated(x, W, (1, 1), [(pad, pad), (pad, pad)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
            x = x + b[None, :, None, None]
        elif layer[0] == "relu":
            x = jax.nn.relu(x)
        elif layer[0] == "pool":
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        else:
            W, b = next(params)
            x = x.reshape(x.shape[0], -1) @ W + b
        out.append(x)
    return out


def main():
    for name in wanted(CONV):
        cfg = CONV[name]
        net = cfg["net"]
        xs, labels, params = make_conv_data(name)
        x, t = jnp.asarray(xs), jnp.asarray(labels)
        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]
        shapes = [h.shape for h in jax.eval_shape(lambda p, x: layers(net, p, x), params, x)]
        check_conv_shapes(name, shapes)

        def predict(params, x):
            return layers(net, params, x)[-1]

        if name == "W5":
            fwd = jax.jit(predict)
            call = lambda: fwd(params, x).block_until_ready()  # noqa: E731
            emit_latency("jax.jit", name, latency_us(cfg["steps"], cfg["warmup"], call))
            continue

        def loss(params, x, t):
            logp = jax.nn.log_softmax(predict(params, x))
            return -jnp.take_along_axis(logp, t[:, None], axis=1).mean()

        time_training(name, cfg, loss, params, x, t)


if __name__ == "__main__":
    main()
