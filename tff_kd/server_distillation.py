"""Server-side distillation of a student toward fixed teacher logits.

FedDF's and FedAUX's server step (the guide's Algorithm 3), also DS-FL's
server model and FedAD's: starting from the fused (averaged) model, take up
to `steps` optimizer steps on minibatches of the distillation inputs,
minimizing

    tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))

(the tau^2 factor is optional: FedDF's and FedAUX's codes have none), plus,
for FedAD, beta times the squared L2 distance between the student's attention
map and a target map (`model_parts.attention_maps`). Each algorithm picks the
rest to match its reference:

- `optimizer`: `adam` (FedDF, FedAUX) or `sgd` (DS-FL's server model
  distilled as its clients distill, `--dsfl_server_distillation=clients`);
- learning-rate `schedule`: `cosine` (FedDF's CosineAnnealingLR over the
  step budget) or `constant` (FedAUX);
- `clip_norm`: global gradient-norm clip (FedDF's code: 5) or None (FedAUX);
- `sampling` of the minibatches: `uniform`, drawn with replacement (DS-FL's
  and FedAD's server models); `shuffled`, epochs over the inputs, each in a
  fresh permutation cut into batches, the last one of an epoch smaller, as a
  PyTorch `DataLoader(shuffle=True, drop_last=False)` re-iterated when
  exhausted (FedDF, FedAUX; fewer inputs than a batch make one batch of
  all); `ordered`, the same epochs unshuffled (FedDF's data-free variant:
  batch i is inputs [i B, (i + 1) B), see `noise_inputs`);
- with a labelled validation split, the student is evaluated every
  `eval_every` steps, training stops after `patience` evaluations without
  improvement, and the best weights seen (including the starting point) are
  kept: FedDF's early stopping. Without one, all steps run.

The optimizer state starts afresh at every call (FedAUX's code keeps one Adam
optimizer across rounds; FedDF's creates one per round).

The whole loop is one `tf.function` (a `tf.while_loop`, no Python per step),
called by the algorithms' server steps: on the TFF worker's CPU (TFF 0.87's
worker has no CUDA; TFF issues #4600, #3709) or in the program's process, on
its GPU when TensorFlow sees one (`tff_kd.server_step`). Minibatches and
permutations come from a stateless seed, so a run is reproducible.
"""

import collections
from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import local_training
from tff_kd import losses
from tff_kd import model_parts
from tff_kd import settings

SAMPLINGS = ('uniform', 'shuffled', 'ordered')
SCHEDULES = ('cosine', 'constant')
OPTIMIZERS = ('adam', 'sgd')


def noise_inputs(
    seed: tf.Tensor, num_batches: int, batch_size: int,
    input_shape: Sequence[int],
) -> tf.Tensor:
  """FedDF's data-free distillation inputs: batches of scaled Gaussian noise.

  FedDF's `NoiseKTSolver._create_data_randomly`
  (codes/FedDF-code/pcode/aggregation/noise_knowledge_transfer.py): a batch
  of standard normal noise, min-max scaled to [0, 1] over the WHOLE batch
  tensor (not per input).

  Args:
    seed: int32 [2] stateless seed.
    num_batches: batches (>= 1).
    batch_size: inputs per batch (>= 1).
    input_shape: the shape of one input.

  Returns:
    float32 [num_batches * batch_size, *input_shape]; rows
    [i * batch_size, (i + 1) * batch_size) are batch i.
  """
  for name, value in (('num_batches', num_batches),
                      ('batch_size', batch_size)):
    if value < 1:
      raise ValueError(f'{name} must be >= 1; got {value}.')
  size = math.prod(input_shape)
  noise = tf.random.stateless_normal([num_batches, batch_size * size], seed)
  low = tf.reduce_min(noise, axis=1, keepdims=True)
  high = tf.reduce_max(noise, axis=1, keepdims=True)
  return tf.reshape((noise - low) / (high - low),
                    [num_batches * batch_size, *input_shape])


@dataclasses.dataclass(frozen=True)
class DistillationConfig:
  """The settings of a server distillation (module docstring).

  Attributes:
    steps: the most distillation steps (>= 0).
    batch_size: distillation minibatch size (>= 1).
    learning_rate: (peak) learning rate.
    schedule: `cosine` (decayed to 0 over the steps run: `steps` capped by
      `max_steps`) or `constant`.
    temperature: tau > 0.
    scale_by_temperature_squared: multiply the KL by tau^2 (Hinton).
    clip_norm: global gradient-norm clip (FedDF's code: 5), or None.
    sampling: `uniform`, `shuffled` or `ordered` (module docstring).
    eval_every: steps between validation evaluations (>= 1).
    patience: evaluations without improvement before stopping (>= 1).
    optimizer: `adam` or `sgd` (plain SGD).
  """

  # The fields with help are the binaries' shared --distill_* flags.
  steps: int = settings.setting(
      200, 'Server distillation (FedDF, DS-FL\'s server model, FedAD; FedAUX'
      ' has its own): most steps per round (0 = no distillation).',
      **settings.count(0, 1_000_000))
  batch_size: int = settings.setting(
      32, 'Server distillation: distillation batch.',
      **settings.count(1, 100_000))
  learning_rate: float = settings.setting(
      1e-3, 'Server distillation: peak Adam learning rate, cosine-decayed '
      '(FedDF\'s code: 1e-3).', **settings.POSITIVE)
  schedule: str = 'cosine'
  temperature: float = settings.setting(
      1.0, 'Server distillation: temperature tau.', **settings.TEMPERATURE)
  scale_by_temperature_squared: bool = True
  clip_norm: Optional[float] = 5.0
  sampling: str = 'uniform'
  eval_every: int = settings.setting(
      10, 'Server distillation: steps between validation evaluations (early'
      ' stopping, with the algorithm\'s validation setting).',
      **settings.count(1, 1_000_000))
  patience: int = settings.setting(
      5, 'Server distillation: evaluations without improvement before '
      'distillation stops.', **settings.count(1, 1_000_000))
  optimizer: str = 'adam'

  def __post_init__(self):
    for name, low in (('steps', 0), ('batch_size', 1), ('eval_every', 1),
                      ('patience', 1)):
      if getattr(self, name) < low:
        raise ValueError(f'{name} must be >= {low}; got {getattr(self, name)}.')
    for name in ('learning_rate', 'temperature'):
      if not getattr(self, name) > 0:
        raise ValueError(f'{name} must be > 0; got {getattr(self, name)}.')
    if self.clip_norm is not None and not self.clip_norm > 0:
      raise ValueError(f'clip_norm must be > 0 or None; got {self.clip_norm}.')
    if self.schedule not in SCHEDULES:
      raise ValueError(
          f'schedule must be one of {SCHEDULES}; got {self.schedule!r}.')
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(
          f'optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}.')
    if self.sampling not in SAMPLINGS:
      raise ValueError(
          f'sampling must be one of {SAMPLINGS}; got {self.sampling!r}.')


def epoch_steps(num_inputs: int, epochs: int, batch_size: int) -> int:
  """The steps of `epochs` passes over `num_inputs` in batches of
  `batch_size`, the last batch of a pass smaller (`sampling='shuffled'`)."""
  return epochs * -(-num_inputs // batch_size)


def build_server_distillation(
    model: Any,
    config: DistillationConfig,
    *,
    attention_weight: float = 0.0,
    attention_grid: Optional[tuple[int, int]] = None,
) -> Callable[..., Any]:
  """Builds `distill(weights, inputs, teacher_logits, validation, seed, max_steps)`.

  Args:
    model: the student, a `VariableModel`-like object (`predict_on_batch`,
      `trainable_variables`, `non_trainable_variables`) built once per trace.
    config: a `DistillationConfig`.
    attention_weight: beta >= 0 of FedAD's attention term; > 0 needs a model
      with a `feature_map` layer and `distill(..., attention_targets=A)`, A
      [R, grid_h * grid_w] the target maps.
    attention_grid: (H, W) of the target maps (default: the student's).

  Returns:
    A `tf.function` `distill(weights, inputs, teacher_logits, validation,
    seed, max_steps, attention_targets=None)`: `weights` a `ModelWeights` to
    start from, `inputs` [R, ...] and `teacher_logits` [R, C] the
    distillation set, `validation` an `(x, y)` pair or None (no early
    stopping), `seed` an int32 [2] stateless seed, `max_steps` an int32
    scalar further capping the steps (0 skips distillation). It returns
    `(ModelWeights, metrics)`, metrics an `OrderedDict` with `steps` run,
    `loss_first` and `loss_last` (the distillation loss of the first and last
    step), and `validation_before` and `validation_best` accuracies (-1
    without validation).
  """
  if not isinstance(config, DistillationConfig):
    raise TypeError(f'config must be a DistillationConfig; got {config!r}.')
  if not attention_weight >= 0:
    raise ValueError(f'attention_weight must be >= 0; got {attention_weight}.')
  (steps, batch_size, learning_rate, schedule, temperature,
   scale_by_temperature_squared, clip_norm, sampling, eval_every,
   patience, optimizer_name) = dataclasses.astuple(config)
  optimizer = (tff.learning.optimizers.build_adam if optimizer_name == 'adam'
               else tff.learning.optimizers.build_sgdm)(
                   learning_rate=learning_rate)
  variables = tuple(model.trainable_variables)
  if attention_weight > 0:
    two_outputs = model_parts.logits_and_feature_map(
        model, 'Attention distillation (FedAD)')
    grid = attention_grid or model_parts.attention_grid(
        model, 'Attention distillation (FedAD)')

  def loss_fn(x, teacher_logits, attention_targets):
    if attention_weight > 0:
      student, feature_maps = two_outputs(x, training=True)
      attention_loss = tf.reduce_mean(tf.reduce_sum(tf.square(
          model_parts.attention_maps(feature_maps, grid) - attention_targets
      ), axis=-1))
    else:
      student = model.predict_on_batch(x, training=True)
      attention_loss = 0.0
    return losses.distillation_loss(
        teacher_logits, student, temperature, scale_by_temperature_squared,
    ) + attention_weight * attention_loss

  def accuracy(x, y):
    predicted = tf.argmax(model.predict_on_batch(x, training=False), axis=-1)
    labels = tf.cast(tf.reshape(y, [-1]), predicted.dtype)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))

  def batch_indices(step, num_inputs, seed):
    """The indices of step `step`'s minibatch (see `sampling`)."""
    if sampling == 'uniform':
      return tf.random.stateless_uniform(
          [batch_size], tf.random.experimental.stateless_fold_in(seed, step),
          maxval=num_inputs, dtype=tf.int32,
      )
    batches_per_epoch = (num_inputs + batch_size - 1) // batch_size
    epoch = step // batches_per_epoch
    first = (step % batches_per_epoch) * batch_size
    order = tf.range(num_inputs)
    if sampling == 'shuffled':
      order = tf.argsort(tf.random.stateless_uniform(
          [num_inputs], tf.random.experimental.stateless_fold_in(seed, epoch)))
    return order[first:tf.minimum(first + batch_size, num_inputs)]

  @tf.function
  def distill(weights, inputs, teacher_logits, validation, seed, max_steps,
              attention_targets=None):
    if (attention_targets is None) != (attention_weight == 0):
      raise ValueError('attention_targets must be given exactly when '
                       f'attention_weight > 0 (it is {attention_weight}).')
    local_training.assign(variables, weights.trainable)
    local_training.assign(model.non_trainable_variables, weights.non_trainable)
    num_steps = tf.minimum(max_steps, steps)
    num_inputs = tf.shape(teacher_logits)[0]
    # Tensors from the start: the loop carries the state.
    optimizer_state = tf.nest.map_structure(
        tf.convert_to_tensor,
        optimizer.initialize(
            tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables)
        ),
    )
    best = tuple(tf.identity(v) for v in variables)
    best_accuracy = (
        tf.constant(-1.0) if validation is None else accuracy(*validation)
    )
    before = best_accuracy
    stale = tf.constant(0)
    loss_first = tf.constant(float('nan'))
    loss_last = tf.constant(float('nan'))
    steps_run = tf.constant(0)
    for step in tf.range(num_steps):
      # One step at a time: the steps share the model's variables, and reads
      # of a later step must not overtake the writes of an earlier one.
      tf.autograph.experimental.set_loop_options(parallel_iterations=1)
      index = batch_indices(step, num_inputs, seed)
      with tf.GradientTape() as tape:
        loss = loss_fn(
            tf.gather(inputs, index), tf.gather(teacher_logits, index),
            None if attention_targets is None
            else tf.gather(attention_targets, index),
        )
      gradients = tape.gradient(loss, variables)
      if clip_norm is not None:
        gradients, _ = tf.clip_by_global_norm(gradients, clip_norm)
      if schedule == 'cosine':
        progress = tf.cast(step, tf.float32) / tf.cast(num_steps, tf.float32)
        optimizer_state = optimizer.set_hparams(
            optimizer_state,
            collections.OrderedDict(
                learning_rate=learning_rate
                * 0.5 * (1.0 + tf.cos(math.pi * progress))
            ),
        )
      optimizer_state, updated = optimizer.next(
          optimizer_state, variables, tuple(gradients)
      )
      local_training.assign(variables, updated)
      loss_first = tf.where(tf.equal(step, 0), loss, loss_first)
      loss_last = loss
      steps_run = step + 1
      if validation is not None and tf.equal(steps_run % eval_every, 0):
        current = accuracy(*validation)
        if current > best_accuracy:
          best_accuracy = current
          best = tuple(tf.identity(v) for v in variables)
          stale = tf.constant(0)
        else:
          stale += 1
        if stale >= patience:
          break
    final = best if validation is not None else variables
    result = tff.learning.models.ModelWeights(
        trainable=[tf.identity(v) for v in final],
        non_trainable=list(weights.non_trainable),
    )
    return result, collections.OrderedDict(
        steps=steps_run,
        loss_first=loss_first,
        loss_last=loss_last,
        validation_before=before,
        validation_best=best_accuracy,
    )

  return distill
