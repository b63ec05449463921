"""Parts of a Keras-backed `VariableModel`: head, features, attention maps.

FedGen trains a generator against the clients' classifier heads and FedAUX
scores inputs with the features the head sees. Both need the model split into
a feature extractor and a head: a Keras model wrapped by
`tff.learning.models.from_keras_model` whose classifier is a Dense layer named
`head`, as every `tasks` model is. FedAD distills attention maps of an
intermediate convolutional layer, the layer named `feature_map` (the output of
the last convolutional block of the `tasks` CNN-type models).

`probe_prototypes` checks a set of model prototypes before anything is traced.
"""

from collections.abc import Callable, Mapping
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

# A no-arg function returning a new model (logits out), e.g. a TFF
# `BaselineTask.model_fn`.
ModelFn = Callable[[], tff.learning.models.VariableModel]


def head_layer(
    model: tff.learning.models.VariableModel, needed_by: str
) -> tf.keras.layers.Dense:
  """The Dense layer named `head`; a clear error naming `needed_by` if none."""
  keras_model = getattr(model, '_keras_model', None)
  try:
    head = keras_model.get_layer('head')
  except (AttributeError, ValueError):
    head = None
  if not isinstance(head, tf.keras.layers.Dense) or not head.use_bias:
    raise ValueError(
        f'{needed_by} needs a model split into feature extractor and head: a'
        ' Keras model (tff.learning.models.from_keras_model) whose classifier'
        " is a Dense layer with bias named 'head'; the model_fn gave "
        f'{type(model).__name__}'
        + (f' wrapping Keras model {keras_model.name!r}' if keras_model else '')
        + '.'
    )
  return head


def feature_extractor(
    model: tff.learning.models.VariableModel, needed_by: str
) -> tf.keras.Model:
  """The Keras model from the inputs to the head's input (shared weights)."""
  head = head_layer(model, needed_by)
  keras_model = model._keras_model  # pylint: disable=protected-access
  return tf.keras.Model(keras_model.inputs, head.input)


FEATURE_MAP = 'feature_map'


def logits_and_feature_map(
    model: tff.learning.models.VariableModel, needed_by: str
) -> tf.keras.Model:
  """Keras model: inputs -> [logits, output of the layer `feature_map`].

  The layer's output must be a convolutional feature map, [batch, H, W,
  channels] or [batch, L, channels]; a clear error naming `needed_by` and the
  model otherwise. Shares the model's weights.
  """
  keras_model = getattr(model, '_keras_model', None)
  try:
    layer = keras_model.get_layer(FEATURE_MAP)
  except (AttributeError, ValueError):
    layer = None
  if layer is None or len(layer.output.shape) not in (3, 4):
    raise ValueError(
        f'{needed_by} needs the attention maps of an intermediate '
        f'convolutional layer: a Keras model with a layer named '
        f'{FEATURE_MAP!r} whose output is [batch, H, W, C] or [batch, L, C]; '
        f'the model_fn gave {type(model).__name__}'
        + (f' wrapping Keras model {keras_model.name!r}, which has '
           + ('no such layer' if layer is None
              else f'one with output shape {layer.output.shape}')
           if keras_model is not None else '')
        + '.'
    )
  return tf.keras.Model(keras_model.inputs,
                        [keras_model.outputs[0], layer.output])


def attention_grid(
    model: tff.learning.models.VariableModel, needed_by: str
) -> tuple[int, int]:
  """The (H, W) of the model's attention maps ((L, 1) for 1-D signals)."""
  shape = logits_and_feature_map(model, needed_by).outputs[1].shape[1:-1]
  return (int(shape[0]), int(shape[1]) if len(shape) == 2 else 1)


def attention_maps(feature_maps: tf.Tensor, grid: tuple[int, int]) -> tf.Tensor:
  """Attention maps of Zagoruyko and Komodakis, on a common grid.

  The channel-wise mean of the squared activations, [batch, H, W] (or [batch,
  L] -> [batch, L, 1]), resized to `grid` when it differs (heterogeneous
  models; area resizing: a cell of a coarser grid averages the cells it
  covers), flattened and L2-normalized: [batch, grid_h * grid_w].
  """
  maps = tf.reduce_mean(tf.square(feature_maps), axis=-1)
  if len(maps.shape) == 2:
    maps = maps[:, :, tf.newaxis]
  maps = maps[..., tf.newaxis]
  if tuple(maps.shape[1:3]) != tuple(grid):
    maps = tf.image.resize(maps, grid, method='area')
  return tf.math.l2_normalize(
      tf.reshape(maps, [-1, grid[0] * grid[1]]), axis=-1)


def probe_prototypes(
    prototype_model_fns: Mapping[str, Callable[[], Any]],
    check: Optional[Callable[[str, Any], None]] = None,
) -> dict[str, dict[str, Any]]:
  """What the algorithms over model prototypes need to know of each model.

  Builds each prototype's model once, in a throwaway graph, checks that all
  take the same inputs and predict the same classes, and runs `check(name,
  model)` (an algorithm's own requirements) on each, so that a bad model fails
  here, with its name, and not inside a trace.

  Returns:
    prototype name -> dict(data_type (tff.SequenceType of the model's input
    spec), metrics_aggregation_fn, input_shape (one example), num_classes).
  """
  if not isinstance(prototype_model_fns, Mapping) or not prototype_model_fns:
    raise ValueError('prototype_model_fns must be a non-empty mapping of '
                     f'prototype name -> model_fn; got {prototype_model_fns!r}.')
  probes = {}
  for name, model_fn in prototype_model_fns.items():
    if not callable(model_fn):
      raise TypeError(f'The model_fn of prototype {name!r} is not callable: '
                      f'{model_fn!r}.')
    with tf.Graph().as_default():
      model = model_fn()
      if not isinstance(model, tff.learning.models.VariableModel):
        raise TypeError(
            f'The model_fn of prototype {name!r} must return a '
            f'tff.learning.models.VariableModel; it returned '
            f'{type(model).__name__}.'
        )
      if check is not None:
        check(name, model)
      spec = model.input_spec
      x_spec = spec['x'] if isinstance(spec, Mapping) else spec[0]
      input_shape = tuple(x_spec.shape[1:])
      probes[name] = dict(
          data_type=tff.SequenceType(tff.types.tensorflow_to_type(spec)),
          metrics_aggregation_fn=tff.learning.metrics.sum_then_finalize(
              model.metric_finalizers()
          ),
          input_shape=input_shape,
          num_classes=int(model.predict_on_batch(
              tf.zeros((1,) + input_shape), training=False).shape[-1]),
      )
  names = list(probes)
  first = probes[names[0]]
  for name in names[1:]:
    for key, what in (('data_type', 'take different inputs'),
                      ('num_classes', 'predict different numbers of classes')):
      if probes[name][key] != first[key]:
        raise ValueError(
            f'Prototypes {names[0]!r} and {name!r} {what}: {first[key]} vs '
            f'{probes[name][key]}.'
        )
  return probes


def check_validation(validation: Optional[tuple[Any, Any]]):
  """A labelled split `(x, y)` as float32 and int32 arrays; None stays None."""
  if validation is None:
    return None
  x = np.asarray(validation[0], np.float32)
  y = np.asarray(validation[1], np.int32)
  if not len(x):
    raise ValueError('The validation split is empty; pass None to run '
                     'every distillation step.')
  return x, y


def check_inputs(inputs: Any, input_shape: tuple[int, ...],
                 name: str) -> np.ndarray:
  """`inputs` as float32 [R, *input_shape], R >= 1; a clear error otherwise."""
  inputs = np.asarray(inputs, np.float32)
  if inputs.ndim < 1 or tuple(inputs.shape[1:]) != tuple(input_shape):
    raise ValueError(
        f'{name} have shape {inputs.shape}; the models take inputs of shape '
        f'{tuple(input_shape)} (so [R, {", ".join(map(str, input_shape))}]).'
    )
  if not len(inputs):
    raise ValueError(f'{name} is empty.')
  return inputs
