"""FedDF and FedAUX: hand computations of the fused init and of AVGLOGITS
distillation, FedAvg equivalence, heterogeneous prototypes, baseline tasks."""

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tasks
import tiny
from tff_kd import algorithms
from tff_kd import communication
from tff_kd import experiment

_SPEC = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=16)


def _structured(datasets, prototypes, names):
  """Each client's data as FedDF takes it: only its own prototype filled."""
  return [
      collections.OrderedDict(
          (n, ds if n == own else ds.take(0)) for n in names)
      for ds, own in zip(datasets, prototypes)
  ]


@functools.lru_cache(maxsize=None)
def _fedavg(model_fn, lr):
  return algorithms.build_fedavg(model_fn, tiny.sgd(lr))


def _trained_alone(model_fn, dataset, lr):
  """A client's trained model: FedAvg over that single client."""
  process = _fedavg(model_fn, lr)
  state = process.next(process.initialize(), [dataset]).state
  return process.get_model_weights(state).trainable


def _distill_x(rows=6, seed=5):
  return np.random.default_rng(seed).normal(
      size=(rows, tiny.NUM_FEATURES)).astype(np.float32)


class FedDFTest(tf.test.TestCase):

  def test_one_prototype_zero_steps_equals_fedavg_exactly(self):
    datasets = tiny.datasets(tiny.client_arrays([7, 12, 4], seed=1), 4)
    feddf = algorithms.build_feddf(
        {'model': tiny.model_fn}, tiny.sgd(0.2),
        distillation_inputs=_distill_x(), distill_steps=0, distill_batch_size=2)
    fedavg = algorithms.build_fedavg(tiny.model_fn, tiny.sgd(0.2))
    a, b = fedavg.initialize(), feddf.initialize()
    client_data = _structured(datasets, ['model'] * 3, ['model'])
    for _ in range(2):
      a = fedavg.next(a, datasets).state
      output = feddf.next(b, client_data)
      b = output.state
    for x, y in zip(fedavg.get_model_weights(a).trainable,
                    feddf.get_model_weights(b).trainable):
      self.assertAllEqual(x, y)
    self.assertEqual(output.metrics['distillation']['model']['steps'], 0)

  def test_fused_init_is_the_weighted_average_per_prototype(self):
    sizes = [5, 9, 3, 8]
    datasets = tiny.datasets(tiny.client_arrays(sizes, seed=2), 4)
    owners = ['linear', 'mlp', 'linear', 'mlp']
    model_fns = {'linear': tiny.model_fn, 'mlp': tiny.mlp_model_fn}
    process = algorithms.build_feddf(
        model_fns, tiny.sgd(0.1), distillation_inputs=_distill_x(),
        distill_steps=0, distill_batch_size=2)
    output = process.next(process.initialize(),
                          _structured(datasets, owners, list(model_fns)))
    for name, fn in model_fns.items():
      mine = [k for k, o in enumerate(owners) if o == name]
      total = sum(sizes[k] for k in mine)
      trained = {k: _trained_alone(fn, datasets[k], 0.1) for k in mine}
      expected = [sum(trained[k][i] * sizes[k] / total for k in mine)
                  for i in range(len(trained[mine[0]]))]
      self.assertAllClose(output.state['prototypes'][name].trainable,
                          expected, rtol=1e-5, atol=1e-6)
      self.assertEqual(output.metrics['aggregator'][name]['total_weight'],
                       total)

  def test_one_distillation_step_toward_avglogits_matches_numpy(self):
    # Two clients of different prototypes; the linear prototype's student is
    # its fused model and the teacher is the mean of BOTH clients' logits.
    arrays = tiny.client_arrays([6, 9], seed=3)
    datasets = tiny.datasets(arrays, 3)
    model_fns = {'linear': tiny.model_fn, 'mlp': tiny.mlp_model_fn}
    x = _distill_x(rows=1)
    lr = 0.01
    process = algorithms.build_feddf(
        model_fns, tiny.sgd(0.1), distillation_inputs=x, distill_steps=1,
        distill_batch_size=1, distill_learning_rate=lr)
    output = process.next(process.initialize(),
                          _structured(datasets, ['linear', 'mlp'],
                                      list(model_fns)))
    kernel, bias = _trained_alone(tiny.model_fn, datasets[0], 0.1)
    w1, b1, w2, b2 = _trained_alone(tiny.mlp_model_fn, datasets[1], 0.1)
    student = x @ kernel + bias
    teacher = (student + np.maximum(x @ w1 + b1, 0) @ w2 + b2) / 2
    dz = tiny.np_softmax(student) - tiny.np_softmax(teacher)
    # Adam's first step: w - lr * sqrt(1 - b2) g / (sqrt(1 - b2) |g| + eps).
    def adam(w, g):
      c = np.sqrt(1 - 0.999)
      return w - lr * c * g / (c * np.abs(g) + 1e-7)
    self.assertAllClose(output.state['prototypes']['linear'].trainable,
                        [adam(kernel, x.T @ dz), adam(bias, dz[0])],
                        rtol=1e-4, atol=1e-6)
    self.assertEqual(output.metrics['fusion']['fused_clients'], 2)

  def test_heterogeneous_digits_two_rounds(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, model='cnn',
                             prototypes=('cnn', 'mlp'), num_clients=6, seed=0)
    process = algorithms.build_feddf(
        {n: task.model_fn_for(n) for n in task.prototypes}, tiny.sgd(0.1),
        distillation_inputs=task.public_x, validation=task.validation,
        distill_steps=20, eval_every=5, patience=2)
    client_input = experiment.client_input_fn(process, task)
    ids = ['0', '1', '2', '3']
    clients = [client_input(c, task.datasets.train_preprocess_fn(
        task.datasets.train_data.create_tf_dataset_for_client(c)))
               for c in ids]
    state = process.initialize()
    start = state['prototypes']
    for _ in range(2):
      output = process.next(state, clients)
      state = output.state
    metrics = output.metrics
    weights_type = process.get_model_weights.type_signature.result
    del weights_type
    owners = [task.client_prototypes[c] for c in ids]
    self.assertCountEqual(set(owners), {'cnn', 'mlp'})
    for name in task.prototypes:
      self.assertGreater(metrics['distillation'][name]['steps'], 0)
      self.assertNotAllClose(state['prototypes'][name].trainable[0],
                             start[name].trainable[0])
    state_type = process.initialize.type_signature.result.member
    down = {n: communication.type_bytes(state_type.prototypes[n])
            for n in task.prototypes}
    communicated = metrics['client_work']['communication']
    self.assertEqual(communicated['bytes_downloaded'],
                     sum(down[o] for o in owners))
    self.assertAllClose(communicated['bytes_downloaded_per_client'],
                        np.mean([down[o] for o in owners]))
    self.assertEqual(metrics['fusion']['fused_clients'], 4)

  def test_accepts_a_tff_baseline_task_model_fn(self):
    task = tff.simulation.baselines.emnist.create_character_recognition_task(
        tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=8,
                                            max_elements=4),
        model_id='cnn_dropout', only_digits=True, use_synthetic_data=True)
    clients = task.datasets.sample_train_clients(2, random_seed=0)
    noise = np.random.default_rng(0).uniform(
        size=(8, 28, 28, 1)).astype(np.float32)
    process = algorithms.build_feddf(
        {'model': task.model_fn}, tiny.sgd(0.01), distillation_inputs=noise,
        distill_steps=2, distill_batch_size=4)
    output = process.next(process.initialize(),
                          [collections.OrderedDict(model=c) for c in clients])
    self.assertEqual(output.metrics['distillation']['model']['steps'], 2)

  def test_clear_errors(self):
    fns = {'model': tiny.model_fn}
    with self.assertRaisesRegex(ValueError, 'fewer than the distillation '
                                'batch size 32'):
      algorithms.build_feddf(fns, tiny.sgd(), distillation_inputs=_distill_x(4))
    with self.assertRaisesRegex(ValueError, r'shape \(4, 7\).*\(4,\)'):
      algorithms.build_feddf(fns, tiny.sgd(),
                             distillation_inputs=np.zeros((4, 7)))
    with self.assertRaisesRegex(ValueError, "FedAUX.*'model'.*head"):
      algorithms.build_fedaux(fns, tiny.sgd(), distillation_inputs=_distill_x(),
                              negative_inputs=_distill_x(), distill_batch_size=2)


class FedAUXTest(tf.test.TestCase):

  def test_two_rounds_uniform_averaging_and_certainty_fusion(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, model='mlp',
                             num_clients=6, alpha=0.1, seed=0)
    process = algorithms.build_fedaux(
        {'mlp': task.model_fn}, tiny.sgd(0.1),
        distillation_inputs=task.public_x[:100],
        negative_inputs=task.public_x[100:], validation=task.validation,
        distill_steps=10)
    client_input = experiment.client_input_fn(process, task)
    clients = [client_input(c, task.datasets.train_preprocess_fn(
        task.datasets.train_data.create_tf_dataset_for_client(c)))
               for c in ['0', '1', '2']]
    state = process.initialize()
    for _ in range(2):
      output = process.next(state, clients)
      state = output.state
    self.assertEqual(output.metrics['aggregator']['mlp']['total_weight'], 3.0)
    self.assertEqual(output.metrics['fusion']['fused_clients'], 3)
    self.assertEqual(output.metrics['distillation']['mlp']['steps'], 10)


if __name__ == '__main__':
  tf.test.main()
