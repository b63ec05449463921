"""Server steps of KD algorithms, and the `FinalizerProcess` that runs them.

A finalizer takes the global model weights and the aggregated client update
and returns the new weights (TFF's `build_apply_optimizer_finalizer` applies
an optimizer; these distill). The update is what
`tff_kd.aggregators.knowledge.KnowledgeFactory` returns:
`<models=<prototype: mean model delta>, knowledge=<field: fused>>`.

A step is a `tff_kd.server_step.ServerStep` `(state, weights, update) ->
(state, weights, measurements)`; `build_finalizer` makes the finalizer of
it, for where the step runs (`tff_kd.server_step`):

- `worker`: the finalizer runs the step: `(<state@SERVER, weights@SERVER,
  update@SERVER> -> <state@SERVER, result=weights@SERVER,
  measurements@SERVER>)`;
- `program`: the finalizer passes the state and weights through and its
  measurements are the update; `tff_kd.process.ProgramStepProcess` runs the
  step in the program after the round and puts its results where the
  `worker` finalizer would have: the state, the weights, the finalizer's
  measurements.

The steps:

- `distillation_step` (FedDF, FedAUX): per prototype, the fused
  model `w - mean delta` is distilled toward the fused logits on the
  distillation inputs (`tff_kd.server_distillation`). Weights:
  `<prototype: ModelWeights>`; state: the round (it seeds the minibatches and,
  data-free, the noise inputs). Measurements: per prototype the distillation
  metrics.
- `generator_step` (FedGen): the model takes the server learning
  rate's step along the mean delta; the generator trains against the
  collected client heads (`tff_kd.generator.train_generator`). Weights:
  `<model=ModelWeights, generator=params>` (the generator travels to the
  clients with the model: the distributor broadcasts both); state: the
  generator's Adam state and the round (its learning-rate decay and seed).
"""

import collections
from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import generator as generator_lib
from tff_kd import model_parts
from tff_kd import server_distillation
from tff_kd import server_step as server_step_lib


def _applied(weights, delta, learning_rate=1.0):
  """`weights - learning_rate * delta` (lists, as `ModelWeights.from_model`
  gives: checkpoints restore into the structure of the initial state)."""
  return tff.learning.models.ModelWeights(
      trainable=[w - learning_rate * d
                 for w, d in zip(weights.trainable, delta)],
      non_trainable=list(weights.non_trainable),
  )


def build_finalizer(
    initial_state: tff.Computation, step: server_step_lib.ServerStep,
    where: str = server_step_lib.DEFAULT_PLACEMENT,
) -> tff.learning.templates.FinalizerProcess:
  """The `FinalizerProcess` of `step`, its state starting at `initial_state()`
  (module docstring; `where`: `worker` or `program`)."""
  server_step_lib.check_placement(where)
  _, weights_type, update_type = step.parameter_types

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(initial_state, tff.SERVER)

  computation = step.computation() if where == 'worker' else None

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.SERVER),
      tff.FederatedType(update_type, tff.SERVER))
  def next_fn(state, weights, update):
    if computation is None:  # `program`: the step runs after the round.
      return tff.templates.MeasuredProcessOutput(state, weights, update)
    state, weights, measurements = tff.federated_map(
        computation, (state, weights, update))
    return tff.templates.MeasuredProcessOutput(state, weights, measurements)

  return tff.learning.templates.FinalizerProcess(init_fn, next_fn)


def distillation_step(
    prototype_model_fns: Mapping[str, model_parts.ModelFn],
    config: server_distillation.DistillationConfig,
    *,
    weights_type: tff.Type,
    update_type: tff.Type,
    inputs_fn: Callable[[tf.Tensor], tf.Tensor],
    validation: Optional[tuple[np.ndarray, np.ndarray]],
    seed: int,
) -> tuple[tff.Computation, server_step_lib.ServerStep]:
  """FedDF's and FedAUX's server distillation (module docstring).

  Args:
    prototype_model_fns: prototype name -> `model_fn`.
    config: the `server_distillation.DistillationConfig`.
    weights_type: `<prototype: ModelWeights>`.
    update_type: `<models=<prototype: delta>, knowledge=<logits=<logits,
      weights>>>`; the fused logits' rows are the distillation inputs.
    inputs_fn: round (int32) -> the round's distillation inputs (call in a
      trace).
    validation: labelled `(x, y)` for early stopping, or None.
    seed: the minibatches' seed, folded with the round.

  Returns:
    `(initial_state, step)` for `build_finalizer`.
  """

  @tff.tensorflow.computation()
  def initial_round():
    return tf.constant(0, tf.int32)

  @server_step_lib.step(np.int32, weights_type, update_type)
  def step():
    distills = collections.OrderedDict(
        (n, server_distillation.build_server_distillation(model_fn(), config))
        for n, model_fn in prototype_model_fns.items())

    def run(round_num, weights, update):
      fused = update['knowledge']['logits']
      max_steps = tf.where(tf.reduce_any(fused['weights'] > 0), config.steps,
                           0)
      new_weights, metrics = (collections.OrderedDict(),
                              collections.OrderedDict())
      for n, distill in distills.items():
        new_weights[n], metrics[n] = distill(
            _applied(weights[n], update['models'][n]), inputs_fn(round_num),
            fused['logits'], validation,
            tf.stack([tf.constant(seed, tf.int32), round_num]), max_steps)
      return round_num + 1, new_weights, metrics

    return run

  return initial_round, step


def generator_step(
    *,
    weights_type: tff.Type,
    update_type: tff.Type,
    server_learning_rate: float,
    generator_optimizer: tff.learning.optimizers.Optimizer,
    learning_rate: float,
    lr_decay: float,
    smoothing: float,
    **train_kwargs,
) -> tuple[tff.Computation, server_step_lib.ServerStep]:
  """FedGen's server step (module docstring).

  Args:
    weights_type: `<model=ModelWeights, generator=params>`, and
      `label_probs` when the clients draw from the label distribution (then
      updated to the round's uploaded counts).
    update_type: `<models=<model=delta>, knowledge=<heads=<values=<kernel,
      bias, counts> stacked, count>>>` (`StackFactory`'s result).
    server_learning_rate: the model's step along the mean delta.
    generator_optimizer: Adam (its learning rate is set every round).
    learning_rate: the generator's initial learning rate, decayed by
      `lr_decay` per round.
    smoothing: what the clients added to each label count (1 or 0).
    **train_kwargs: `generator.train_generator`'s settings (steps,
      batch_size, noise_dim, weight_decay, diversity_weight, teacher_loss,
      noise).

  Returns:
    `(initial_state, step)` for `build_finalizer`.
  """
  specs = tuple(tf.TensorSpec(t.shape, t.dtype)
                for t in weights_type.generator['params'])

  @tff.tensorflow.computation()
  def initial_state():
    return collections.OrderedDict(
        generator_optimizer=generator_optimizer.initialize(specs),
        round=tf.constant(0, tf.int32))

  def update_step(state, weights, update):
    round_num = state['round']
    optimizer_state = generator_optimizer.set_hparams(
        state['generator_optimizer'],
        collections.OrderedDict(
            generator_optimizer.get_hparams(state['generator_optimizer']),
            learning_rate=learning_rate
            * lr_decay ** tf.cast(round_num, tf.float32)))
    collected = update['knowledge']['heads']
    uploads = collected['values']
    generator, optimizer_state, losses = generator_lib.train_generator(
        weights['generator'], generator_optimizer, optimizer_state,
        uploads['kernel'], uploads['bias'], uploads['counts'],
        seed=round_num, smoothing=smoothing, **train_kwargs)
    new_weights = collections.OrderedDict(
        model=_applied(weights['model'], update['models']['model'],
                       server_learning_rate),
        generator=generator)
    if 'label_probs' in weights:
      # The round's trained labels (counts without their smoothing; absent
      # clients' zero rows stay 0); kept when no client trained.
      total = tf.reduce_sum(tf.nn.relu(uploads['counts'] - smoothing), axis=0)
      new_weights['label_probs'] = tf.cond(
          tf.reduce_sum(total) > 0, lambda: total / tf.reduce_sum(total),
          lambda: weights['label_probs'])
    new_state = collections.OrderedDict(generator_optimizer=optimizer_state,
                                        round=round_num + 1)
    return new_state, new_weights, collections.OrderedDict(
        loss_first_step=losses[0], loss_last_step=losses[-1],
        clients_collected=collected['count'])

  return initial_state, server_step_lib.ServerStep(
      lambda: update_step,
      (initial_state.type_signature.result, weights_type, update_type))
