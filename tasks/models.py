"""Keras classifiers for the tasks: `mlp`, `cnn`, `resnet8`, `cnn_latent32`
(logits out).

`cnn_latent32` is `cnn` with a linear 32-d layer (`latent`) before its head,
as FedGen's official MNIST model (`encode_fc1`, hidden -> latent 32, no
activation): FedGen's generator then produces 32-d latents, not the 128-d
post-ReLU features of `cnn`.

Every model works on images (H, W, C) and on 1-D signals (L,) (reshaped to
(L, 1) and convolved with Conv1D). Conventions other code relies on:

- the last layer is a Dense layer named `head` with `num_classes` units; its
  input is the feature vector (feature extractor = model up to `head`'s input);
- CNN-type models (`cnn`, `resnet8`, `cnn_latent32`) name the output of their last
  convolutional block `feature_map` (for attention maps); `mlp` has none.

No BatchNorm: averaging batch statistics across non-IID clients is a known
trap; `resnet8` uses GroupNormalization. Initializers are seeded per layer, so
the same seed gives the same weights.
"""

import itertools

import tensorflow as tf

MODEL_NAMES = ('mlp', 'cnn', 'resnet8', 'cnn_latent32')
_LATENT_DIM = 32


class _Init:
  """Seeded initializers, a different seed for every layer."""

  def __init__(self, seed: int):
    self._counter = itertools.count(seed * 1000)

  def kernel(self):
    return tf.keras.initializers.GlorotUniform(seed=next(self._counter))


def _is_signal(input_shape) -> bool:
  return len(input_shape) == 1


def _mlp(inputs, init):
  x = tf.keras.layers.Flatten()(inputs)
  for units in (200, 200):
    x = tf.keras.layers.Dense(
        units, activation='relu', kernel_initializer=init.kernel()
    )(x)
  return x


def _cnn(inputs, init, signal):
  conv = tf.keras.layers.Conv1D if signal else tf.keras.layers.Conv2D
  pool = tf.keras.layers.MaxPool1D if signal else tf.keras.layers.MaxPool2D
  size = 5 if signal else 3
  x = conv(32, size, padding='same', activation='relu',
           kernel_initializer=init.kernel())(inputs)
  x = pool(2)(x)
  x = conv(64, size, padding='same', activation='relu',
           kernel_initializer=init.kernel(), name='feature_map')(x)
  x = pool(2)(x)
  x = tf.keras.layers.Flatten()(x)
  return tf.keras.layers.Dense(
      128, activation='relu', kernel_initializer=init.kernel()
  )(x)


def _resnet8(inputs, init, signal):
  conv = tf.keras.layers.Conv1D if signal else tf.keras.layers.Conv2D
  pool = (
      tf.keras.layers.GlobalAveragePooling1D
      if signal else tf.keras.layers.GlobalAveragePooling2D
  )

  def norm(channels):
    return tf.keras.layers.GroupNormalization(groups=min(8, channels))

  def block(x, channels, stride, name=None):
    y = conv(channels, 3, strides=stride, padding='same',
             kernel_initializer=init.kernel())(x)
    y = tf.keras.layers.ReLU()(norm(channels)(y))
    y = conv(channels, 3, padding='same', kernel_initializer=init.kernel())(y)
    y = norm(channels)(y)
    if stride != 1 or x.shape[-1] != channels:
      x = conv(channels, 1, strides=stride, kernel_initializer=init.kernel())(x)
      x = norm(channels)(x)
    return tf.keras.layers.ReLU(name=name)(tf.keras.layers.Add()([x, y]))

  x = conv(16, 3, padding='same', kernel_initializer=init.kernel())(inputs)
  x = tf.keras.layers.ReLU()(norm(16)(x))
  x = block(x, 16, 1)
  x = block(x, 32, 2)
  x = block(x, 64, 2, name='feature_map')
  return pool()(x)


def build_keras_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, seed: int
) -> tf.keras.Model:
  """Builds model `name` for inputs of `input_shape`; outputs logits."""
  if name not in MODEL_NAMES:
    raise ValueError(f'Unknown model {name!r}; choose one of {MODEL_NAMES}.')
  if len(input_shape) not in (1, 3):
    raise ValueError(
        f'input_shape must be (L,) or (H, W, C); got {tuple(input_shape)}.'
    )
  init = _Init(seed)
  inputs = tf.keras.Input(shape=input_shape)
  signal = _is_signal(input_shape)
  x = tf.keras.layers.Reshape(input_shape + (1,))(inputs) if signal else inputs
  if name == 'mlp':
    features = _mlp(x, init)
  elif name in ('cnn', 'cnn_latent32'):
    features = _cnn(x, init, signal)
    if name == 'cnn_latent32':
      features = tf.keras.layers.Dense(
          _LATENT_DIM, kernel_initializer=init.kernel(), name='latent'
      )(features)
  else:
    features = _resnet8(x, init, signal)
  logits = tf.keras.layers.Dense(
      num_classes, kernel_initializer=init.kernel(), name='head'
  )(features)
  return tf.keras.Model(inputs, logits, name=name)
