"""The client's local training loop, in pure TensorFlow.

One loop serves FedAvg and every client-side distillation algorithm: the loss
of a batch is the model's own loss (cross-entropy for our tasks) plus, when a
`distillation_fn` is given, a term that compares the student's logits with the
logits of a frozen teacher model on the same batch. The teacher's weights are
the broadcast model's (FedNTD, FedSSD) or weights sent beside it (FedGKD), and
`extra` is whatever else the server sent (FedSSD's class credibility). The loop is a
`tf.function` that iterates the client dataset with `dataset_reduce`, so no
Python runs per batch.

`build_distillation_epochs` is the other client loop of the guide: epochs of
distillation toward teacher logits on shared unlabeled inputs (DS-FL's
clients distill on the global soft labels before they train).

No `tff` import here: `model` is anything with the interface of
`tff.learning.models.VariableModel` and `optimizer` a
`tff.learning.optimizers.Optimizer`.
"""

from collections.abc import Callable, Mapping
from typing import Any, Optional

import tensorflow as tf

from tff_kd import losses

# (labels, student_logits, teacher_logits, extra) -> scalar loss added to the
# model's own loss; `extra` is the broadcast payload or None.
DistillationFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, Any], tf.Tensor]
# (observed, labels, student_logits) -> observed: a statistic accumulated over
# the training steps' own forward passes (FD's per-label mean outputs).
ObserveFn = Callable[[Any, tf.Tensor, tf.Tensor], Any]


def batch_inputs(batch: Any) -> Any:
  """The model inputs of a batch: `batch['x']`, or `batch[0]` for tuples."""
  return batch['x'] if isinstance(batch, Mapping) else batch[0]


def batch_labels(batch: Any) -> Any:
  """The labels of a batch: `batch['y']`, or `batch[1]` for tuples."""
  return batch['y'] if isinstance(batch, Mapping) else batch[1]


def dataset_reduce(dataset, initial_state, reduce_fn):
  """`dataset.reduce(initial_state, reduce_fn)` as an in-graph loop.

  For use inside a `tf.function`: a `for` loop over `iter(dataset)` (a
  `tf.while_loop`, as TFF's `use_experimental_simulation_loop`). Not
  `Dataset.reduce`, which instantiates `reduce_fn` as a new function every
  time it runs: ~50 ms per call for a training step of the digits `cnn`,
  five times the compute of a client's 7 batches (measured by
  `benchmarks.benchmark`'s plain loop: 0.59 s per round with `Dataset.reduce`).

  The loop iterates `dataset` with tf.data's default graph optimizations and
  its autotuning turned off (`experimental_optimization.
  apply_default_optimizations = False`, `autotune.enabled = False`, set by
  `with_options`, which override the dataset's own). Each client's iterator
  is made anew in every round; with them on, making one rewrote the
  dataset's graph and started the autotuning model, whose bookkeeping then
  ran beside the few small ops of a client pipeline (shuffle, batch, repeat)
  without speeding any up; `benchmarks.benchmark` times a round with and
  without them (docs/PERFORMANCE.md). The elements and their order do not
  change, only how the pipeline runs: the numbers are the same with and
  without the options.
  """
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  options.autotune.enabled = False
  state = initial_state
  for batch in iter(dataset.with_options(options)):
    state = reduce_fn(state, batch)
  return state


def trainable_variables(model) -> tuple[tf.Variable, ...]:
  return tuple(model.trainable_variables)


def assign(variables, values) -> None:
  for variable, value in zip(variables, tf.nest.flatten(values)):
    variable.assign(value)


def build_client_update(
    model,
    optimizer,
    *,
    teacher=None,
    distillation_fn: Optional[DistillationFn] = None,
    observe_fn: Optional[ObserveFn] = None,
) -> Callable[..., Any]:
  """Builds `client_update(initial_weights, dataset, optimizer_hparams)`.

  Args:
    model: the student, a `VariableModel`-like object built once per trace.
    optimizer: a `tff.learning.optimizers.Optimizer`.
    teacher: optional second model of the same architecture, frozen, with the
      `teacher_weights` passed to `client_update` (default: the initial
      weights, i.e. the broadcast global model).
    distillation_fn: the extra loss term of each batch; its `teacher_logits`
      are None without a `teacher` (FedGen distills from a generator).
    observe_fn: folds each training step's labels and student logits (the
      forward pass the step's gradient comes from) into a statistic that
      starts at `client_update`'s `observed` argument.

  Returns:
    A `tf.function` `client_update(initial_weights, dataset, optimizer_hparams,
    teacher_weights=None, extra=None, observed=None)` returning `(delta,
    weight, is_finite, unfinalized_metrics)`, plus the final `observed` with
    an `observe_fn`: `delta = initial_trainable - final_trainable` as in
    TFF's FedAvg, `weight` the number of examples trained on (float32). A
    client whose delta has a NaN or Inf sends a zero delta with weight 0 and
    `is_finite = 0`, so the weighted mean ignores it (as TFF's model-delta
    client work does), and its training metrics are reset.
  """
  if teacher is not None and distillation_fn is None:
    raise ValueError('A teacher needs a distillation_fn.')
  student_vars = model.trainable_variables
  non_trainable_vars = model.non_trainable_variables

  @tf.function
  def client_update(
      initial_weights, dataset, optimizer_hparams, teacher_weights=None,
      extra=None, observed=None,
  ):
    trainable, non_trainable = initial_weights
    assign(student_vars, trainable)
    assign(non_trainable_vars, non_trainable)
    if teacher is not None:
      teacher_trainable, teacher_non_trainable = (
          initial_weights if teacher_weights is None else teacher_weights
      )
      assign(teacher.trainable_variables, teacher_trainable)
      assign(teacher.non_trainable_variables, teacher_non_trainable)
    specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in student_vars)
    optimizer_state = optimizer.set_hparams(
        optimizer.initialize(specs), optimizer_hparams
    )

    def reduce_fn(state, batch):
      num_examples, optimizer_state, observed = state
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
        loss = output.loss
        if distillation_fn is not None:
          teacher_logits = None if teacher is None else tf.stop_gradient(
              teacher.predict_on_batch(batch_inputs(batch), training=False)
          )
          loss += distillation_fn(
              batch_labels(batch), output.predictions, teacher_logits, extra
          )
      gradients = tape.gradient(loss, student_vars)
      if observe_fn is not None:
        observed = observe_fn(observed, batch_labels(batch),
                              tf.stop_gradient(output.predictions))
      optimizer_state, updated = optimizer.next(
          optimizer_state, tuple(student_vars), tuple(gradients)
      )
      assign(student_vars, updated)
      if output.num_examples is None:
        num_examples += tf.shape(output.predictions, out_type=tf.int64)[0]
      else:
        num_examples += tf.cast(output.num_examples, tf.int64)
      return num_examples, optimizer_state, observed

    num_examples, _, observed = dataset_reduce(
        dataset,
        (tf.constant(0, tf.int64), optimizer_state,
         () if observed is None else observed),
        reduce_fn,
    )
    delta = tf.nest.map_structure(
        tf.subtract, tuple(tf.nest.flatten(trainable)), tuple(student_vars)
    )
    is_finite = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(d)) for d in delta]
    )
    if not is_finite:
      delta = tf.nest.map_structure(tf.zeros_like, delta)
      model.reset_metrics()
    weight = tf.where(is_finite, tf.cast(num_examples, tf.float32), 0.0)
    result = (
        delta,
        weight,
        tf.cast(is_finite, tf.int32),
        model.report_local_unfinalized_metrics(),
    )
    return result if observe_fn is None else result + (observed,)

  return client_update


def build_distillation_epochs(
    model: Any, optimizer: Any, *, epochs: int, batch_size: int
) -> Callable[..., list[tf.Tensor]]:
  """Builds `distill(weights, inputs, teacher_logits, seed, max_batches)`.

  Epochs of minibatch steps on KL(softmax(teacher) || softmax(student)) over
  the R shared `inputs` (DS-FL's step 2: the clients distill on the global
  soft labels). Epoch e visits the inputs in the permutation drawn from the
  stateless seed `[seed[0], seed[1] * 1000 + e]`, cut into batches of
  `batch_size` (the last one smaller); the optimizer state starts afresh.

  Args:
    model: a `VariableModel`-like object built once per trace.
    optimizer: a `tff.learning.optimizers.Optimizer` (DS-FL: SGD).
    epochs: passes over the inputs (>= 1).
    batch_size: minibatch size (>= 1).

  Returns:
    `distill(weights, inputs, teacher_logits, seed, max_batches)`: `weights`
    a `ModelWeights`-like (`trainable`, `non_trainable`) to start from,
    `inputs` [R, ...], `teacher_logits` [R, C], `seed` int32 [2],
    `max_batches` an int64 cap on the steps (-1: all, 0: none). Returns the
    trainable weights after the steps. Call it in a `tf.function` (it
    iterates a dataset).
  """
  for name, value in (('epochs', epochs), ('batch_size', batch_size)):
    if value < 1:
      raise ValueError(f'{name} must be >= 1; got {value}.')
  def distill(weights, inputs, teacher_logits, seed, max_batches):
    variables = trainable_variables(model)
    assign(variables, weights.trainable)
    assign(model.non_trainable_variables, weights.non_trainable)
    num_inputs = tf.shape(teacher_logits)[0]
    order = tf.concat([
        tf.argsort(tf.random.stateless_uniform(
            [num_inputs], tf.stack([seed[0], seed[1] * 1000 + e])))
        for e in range(epochs)
    ], axis=0)
    batches = tf.data.Dataset.from_tensor_slices(order).batch(
        batch_size).take(max_batches)
    state = optimizer.initialize(
        tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables))

    def step(state, index):
      with tf.GradientTape() as tape:
        loss = losses.distillation_loss(
            tf.gather(teacher_logits, index),
            model.predict_on_batch(tf.gather(inputs, index), training=True))
      state, updated = optimizer.next(
          state, variables, tuple(tape.gradient(loss, variables)))
      assign(variables, updated)
      return state

    state = dataset_reduce(batches, state, step)
    with tf.control_dependencies(tf.nest.flatten(state)):
      return [tf.identity(v) for v in variables]

  return distill
