"""Tiny Keras models with one dependency-group kind each, and helpers shared by the pruning tests."""
import numpy as np

SEED = 3


def _randomise_bn(model, seed: int = SEED) -> None:
    """Give every BatchNorm non-trivial statistics so removing channels is visible in its outputs."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            vals = []
            for w in layer.weights:
                n = w.shape[-1]
                if w.name == "moving_variance":
                    vals.append(rng.uniform(0.5, 2.0, n).astype(np.float32))
                elif w.name == "gamma":
                    vals.append(rng.uniform(0.5, 1.5, n).astype(np.float32))
                else:
                    vals.append(rng.normal(0, 0.3, n).astype(np.float32))
            layer.set_weights(vals)


def conv_bn_conv():
    import keras

    inp = keras.Input((12, 12, 3), name="img")
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(24, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("relu", name="r2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(5, name="out")(x)
    m = keras.Model(inp, out, name="conv_bn_conv")
    _randomise_bn(m)
    return m


def depthwise():
    import keras

    inp = keras.Input((12, 12, 3), name="img")
    x = keras.layers.Conv2D(16, 1, name="expand")(inp)
    x = keras.layers.BatchNormalization(name="bn_e")(x)
    x = keras.layers.ReLU(6.0, name="relu_e")(x)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn_dw")(x)
    x = keras.layers.Conv2D(8, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(5, name="out")(x)
    m = keras.Model(inp, out, name="depthwise")
    _randomise_bn(m)
    return m


def residual_add():
    import keras

    inp = keras.Input((12, 12, 3), name="img")
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inp)
    b = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="b1")(a)
    b = keras.layers.Conv2D(16, 3, padding="same", name="b2")(b)
    s = keras.layers.Add(name="add")([a, b])
    s = keras.layers.ReLU(name="add_relu")(s)
    x = keras.layers.Conv2D(24, 3, strides=2, padding="same", activation="relu", name="after")(s)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    out = keras.layers.Dense(5, name="out")(x)
    return keras.Model(inp, out, name="residual_add")


def squeeze_excite():
    import keras

    inp = keras.Input((12, 12, 3), name="img")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="feat")(inp)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    s = keras.layers.Conv2D(8, 1, activation="relu", name="se_reduce")(s)
    s = keras.layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    x = keras.layers.Multiply(name="se_mul")([x, s])
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="after")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(5, name="out")(x)
    return keras.Model(inp, out, name="squeeze_excite")


def concat():
    import keras

    inp = keras.Input((12, 12, 3), name="img")
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="left")(inp)
    b = keras.layers.Conv2D(24, 1, activation="relu", name="right")(inp)
    x = keras.layers.Concatenate(name="cat")([a, b])
    x = keras.layers.BatchNormalization(name="bn_cat")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="fuse")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(5, name="out")(x)
    m = keras.Model(inp, out, name="concat")
    _randomise_bn(m)
    return m


def flatten_dense():
    import keras

    inp = keras.Input((8, 8, 2), name="img")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(24, activation="relu", name="fc")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    out = keras.layers.Dense(5, name="out")(x)
    return keras.Model(inp, out, name="flatten_dense")


def two_exits():
    """A residual trunk with an exit head hanging off the residual channel set."""
    import keras

    inp = keras.Input((12, 12, 3), name="img")
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inp)
    b = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="b1")(a)
    s = keras.layers.Add(name="add")([a, b])
    e0 = keras.layers.Dense(5, name="exit0")(keras.layers.GlobalAveragePooling2D(name="exit0_pool")(s))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="deep")(s)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="deeper")(x)
    e1 = keras.layers.Dense(5, name="exit1")(keras.layers.GlobalAveragePooling2D(name="exit1_pool")(x))
    return keras.Model(inp, [e0, e1], name="two_exits")


def with_reshape():
    """A Reshape (not in the pruning registry) in the middle: its channel sets are left alone."""
    import keras

    inp = keras.Input((12, 12, 3), name="img")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="before")(inp)
    x = keras.layers.Reshape((12, 24, 8), name="odd_reshape")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="after1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="after2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(5, name="out")(x)
    return keras.Model(inp, out, name="with_reshape")


KINDS = {
    "conv_bn_conv": conv_bn_conv, "depthwise": depthwise, "residual_add": residual_add,
    "squeeze_excite": squeeze_excite, "concat": concat, "flatten_dense": flatten_dense, "two_exits": two_exits,
    "with_reshape": with_reshape,
}


def inputs_for(model, n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).uniform(0, 1, (n,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)


def random_keep(graph, seed: int = 0, low: float = 0.3):
    """A random subset of channels for every prunable group (at least one channel each)."""
    rng = np.random.RandomState(seed)
    keep = {}
    for g in graph.prunable:
        k = max(1, int(round(g.channels * rng.uniform(low, 0.9))))
        keep[g.index] = np.sort(rng.choice(g.channels, k, replace=False))
    return keep
