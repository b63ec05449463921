"""Federated Averaging (McMahan et al., AISTATS 2017), the guide's Algorithm 1.

Each round the sampled clients run E epochs of local SGD (batch B) from the
broadcast model w_t; the server averages their updates with weights n_k / n
and applies the average with the server optimizer. With server SGD at learning
rate 1 this is w_{t+1} = sum_k n_k / n w_k, the paper's update; other server
optimizers give the generalized FedAvg of Reddi et al., ICLR 2021.
"""

from typing import Optional

import numpy as np
import tensorflow_federated as tff

from tff_kd import client_work as client_work_lib
from tff_kd import model_parts
from tff_kd import process as process_lib
from tff_kd.aggregators import knowledge
from tff_kd.algorithms import spec as spec_lib


def build_fedavg(
    model_fn: model_parts.ModelFn,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    model_distributor: Optional[tff.learning.templates.DistributionProcess] = None,
    model_aggregator: Optional[knowledge.ModelAggregator] = None,
    distillation: Optional[client_work_lib.Distillation] = None,
) -> process_lib.GlobalModelsProcess:
  """Builds FedAvg as a composed `tff.learning.templates.LearningProcess`.

  The process is `compose_learning_process(initial weights, distributor,
  client work, aggregator, finalizer)`, the recipe of TFF's
  `build_weighted_fed_avg`; only the client work (ours, `tff_kd.client_work`)
  and the default aggregator (`WeightedMeanFactory`) are our own.

  Args:
    model_fn: no-arg function returning a new `tff.learning.models.
      VariableModel`, e.g. the `model_fn` of any TFF `BaselineTask`.
    client_optimizer_fn: a `tff.learning.optimizers.Optimizer` for local SGD.
    server_optimizer_fn: a `tff.learning.optimizers.Optimizer` applied to the
      averaged update; default SGD with learning rate 1 (plain FedAvg).
    model_distributor: default `tff.learning.templates.build_broadcast_process`.
    model_aggregator: a `tff.aggregators.WeightedAggregationFactory`, or an
      unweighted one (TFF's DP aggregators; every client counts the same, as
      in TFF's builders); default `tff_kd.aggregators.WeightedMeanFactory()`
      (n_k / n weights).
    distillation: optional client-side distillation
      (`tff_kd.client_work.Distillation`); client-side KD algorithms are FedAvg
      with this set, and with a `model_distributor` that broadcasts what the
      distillation needs beside the model (teacher weights, extra payload).

  Returns:
    A `tff_kd.process.GlobalModelsProcess` (TFF's, evaluated with `model_fn`'s
    model by `tff_kd.experiment`) with `initialize`:
    `( -> S@SERVER)`, `next`: `(<S@SERVER, {B*}@CLIENTS> -> <S@SERVER,
    metrics@SERVER>)`, `get_model_weights` and `set_model_weights`.
  """
  if server_optimizer_fn is None:
    server_optimizer_fn = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  model_aggregator = knowledge.check_model_aggregator(model_aggregator)
  if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
    model_aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator)

  @tff.tensorflow.computation()
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  model_weights_type = initial_model_weights_fn.type_signature.result
  expected_broadcast = client_work_lib.broadcast_type(
      model_weights_type, distillation
  )
  if model_distributor is None:
    if expected_broadcast != model_weights_type:
      raise ValueError(
          'This distillation broadcasts more than the model weights; pass a '
          f'model_distributor whose result is {expected_broadcast}@CLIENTS.'
      )
    model_distributor = tff.learning.templates.build_broadcast_process(
        model_weights_type
    )
  aggregator = model_aggregator.create(
      model_weights_type.trainable, tff.TensorType(np.float32)
  )
  client_work = client_work_lib.build_client_work(
      model_fn, client_optimizer_fn, distillation=distillation
  )
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer_fn, model_weights_type
  )
  return process_lib.GlobalModelsProcess(
      tff.learning.templates.compose_learning_process(
          initial_model_weights_fn,
          model_distributor,
          client_work,
          aggregator,
          finalizer,
      ),
      {'model': model_fn},
  )


SPEC = spec_lib.Spec(
    'fedavg', 'FedAvg (McMahan et al. 2017): n_k/n weighted model averaging.',
    spec_lib.NoSettings, spec_lib.averaging(build_fedavg))
