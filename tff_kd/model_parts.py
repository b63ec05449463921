"""Parts of a Keras-backed `VariableModel`: its classifier head and features.

FedGen trains a generator against the clients' classifier heads and FedAUX
scores inputs with the features the head sees. Both need the model split into
a feature extractor and a head: a Keras model wrapped by
`tff.learning.models.from_keras_model` whose classifier is a Dense layer named
`head`, as every `tasks` model is.
"""

import tensorflow as tf
import tensorflow_federated as tff


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
