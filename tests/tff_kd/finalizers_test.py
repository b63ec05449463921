"""The KD finalizers: type signatures, the applied mean delta, one server
distillation step by hand, the generator's step and its Adam state."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import finalizers
from tff_kd import generator as generator_lib
from tff_kd import server_distillation
from tff_kd.aggregators import logit_fusion

F32 = np.float32
ROWS = 3  # Distillation inputs.
MODEL_FNS = collections.OrderedDict(linear=tiny.model_fn,
                                    mlp=tiny.mlp_model_fn)


def _initial_weights(model_fns):

  @tff.tensorflow.computation()
  def initial():
    return collections.OrderedDict(
        (n, tff.learning.models.ModelWeights.from_model(fn()))
        for n, fn in model_fns.items())

  return initial


def _delta_type(model_weights_type):
  """A client's delta: a tuple of the trainable tensors."""
  return tff.to_type(tuple(model_weights_type.trainable))


def _distillation_update_type(weights_type):
  return tff.to_type(collections.OrderedDict(
      models=collections.OrderedDict(
          (n, _delta_type(weights_type[n]))
          for n in tff.structure.name_list(weights_type)),
      knowledge=collections.OrderedDict(
          logits=logit_fusion.value_type(ROWS, tiny.NUM_CLASSES))))


def _distillation_inputs():
  return np.random.default_rng(7).normal(
      size=(ROWS, tiny.NUM_FEATURES)).astype(F32)


def _distillation_finalizer(model_fns, config):
  weights_type = _initial_weights(model_fns).type_signature.result
  x = _distillation_inputs()
  return finalizers.build_finalizer(*finalizers.distillation_step(
      model_fns, config, weights_type=weights_type,
      update_type=_distillation_update_type(weights_type),
      inputs_fn=lambda round_num: tf.constant(x), validation=None, seed=3))


def _random_like(weights, rng, scale=0.1):
  return tuple((scale * rng.normal(size=np.shape(w))).astype(F32)
               for w in weights)


def _distillation_update(weights, rng, row_weights=None):
  """Random deltas per prototype and random fused logits."""
  return collections.OrderedDict(
      models=collections.OrderedDict(
          (n, _random_like(w.trainable, rng)) for n, w in weights.items()),
      knowledge=collections.OrderedDict(logits=collections.OrderedDict(
          logits=rng.normal(size=(ROWS, tiny.NUM_CLASSES)).astype(F32),
          weights=(np.full(ROWS, 2.0, F32) if row_weights is None
                   else row_weights))))


_DISTILLATION_METRICS = tff.StructType(
    [(name, tff.TensorType(dtype)) for name, dtype in (
        ('steps', np.int32), ('loss_first', F32), ('loss_last', F32),
        ('validation_before', F32), ('validation_best', F32))])


class DistillationFinalizerComputationTest(tf.test.TestCase):

  def test_type_signature(self):
    weights_type = _initial_weights(MODEL_FNS).type_signature.result
    update_type = _distillation_update_type(weights_type)
    finalizer = _distillation_finalizer(
        MODEL_FNS, server_distillation.DistillationConfig(steps=2,
                                                          batch_size=2))
    self.assertIsInstance(finalizer, tff.learning.templates.FinalizerProcess)
    state_type = tff.FederatedType(tff.TensorType(np.int32), tff.SERVER)
    tff.test.assert_types_equivalent(finalizer.initialize.type_signature,
                                     tff.FunctionType(None, state_type))
    tff.test.assert_types_equivalent(
        finalizer.next.type_signature,
        tff.FunctionType(
            tff.StructType([
                ('state', state_type),
                ('weights', tff.FederatedType(weights_type, tff.SERVER)),
                ('update', tff.FederatedType(update_type, tff.SERVER)),
            ]),
            tff.templates.MeasuredProcessOutput(
                state_type, tff.FederatedType(weights_type, tff.SERVER),
                tff.FederatedType(tff.StructType(
                    [(n, _DISTILLATION_METRICS) for n in MODEL_FNS]),
                                  tff.SERVER))))


class DistillationFinalizerExecutionTest(tf.test.TestCase,
                                         parameterized.TestCase):

  @parameterized.named_parameters(
      ('no_steps', 0, None),
      # Steps, but no client sent logits: nothing to distill toward.
      ('nothing_fused', 2, np.zeros(ROWS, F32)),
  )
  def test_result_is_weights_minus_mean_delta_exactly(self, steps,
                                                      row_weights):
    finalizer = _distillation_finalizer(
        MODEL_FNS, server_distillation.DistillationConfig(steps=steps,
                                                          batch_size=2))
    weights = _initial_weights(MODEL_FNS)()
    update = _distillation_update(weights, np.random.default_rng(1),
                                  row_weights)
    state = finalizer.initialize()
    self.assertEqual(state, 0)
    for round_num in (1, 2):
      output = finalizer.next(state, weights, update)
      state = output.state
      self.assertEqual(state, round_num)
      for n in MODEL_FNS:
        expected = [np.asarray(w) - d for w, d in zip(
            weights[n].trainable, update['models'][n])]
        self.assertLen(output.result[n].trainable, len(expected))
        for got, want in zip(output.result[n].trainable, expected):
          self.assertAllEqual(got, want)
        self.assertEqual(output.measurements[n]['steps'], 0)

  def test_one_step_matches_adam_by_hand(self):
    lr = 0.01
    model_fns = collections.OrderedDict(linear=tiny.model_fn)
    finalizer = _distillation_finalizer(
        model_fns, server_distillation.DistillationConfig(
            steps=1, batch_size=ROWS, learning_rate=lr, schedule='constant',
            clip_norm=None, sampling='shuffled',
            scale_by_temperature_squared=False))
    weights = _initial_weights(model_fns)()
    update = _distillation_update(weights, np.random.default_rng(2))
    output = finalizer.next(finalizer.initialize(), weights, update)
    x = _distillation_inputs()
    teacher = update['knowledge']['logits']['logits']
    student = [np.asarray(w) - d for w, d in zip(
        weights['linear'].trainable, update['models']['linear'])]

    def gradients(step, params):
      del step
      kernel, bias = params
      dz = (tiny.np_softmax(x @ kernel + bias) - tiny.np_softmax(teacher)
            ) / ROWS
      return [x.T @ dz, dz.sum(axis=0)]

    self.assertAllClose(output.result['linear'].trainable,
                        tiny.np_adam(student, gradients, [lr]),
                        rtol=1e-4, atol=1e-6)
    # Its loss: the batch mean KL(teacher || student) at the start.
    p, q = tiny.np_softmax(teacher), tiny.np_softmax(x @ student[0]
                                                     + student[1])
    metrics = output.measurements['linear']
    self.assertEqual(metrics['steps'], 1)
    self.assertAllClose(metrics['loss_first'],
                        np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)),
                        rtol=1e-4)
    self.assertEqual(metrics['validation_best'], -1.0)
    self.assertEqual(output.state, 1)


def _generator_weights(noise_dim=2, hidden=4, feature_dim=tiny.NUM_FEATURES):

  @tff.tensorflow.computation()
  def initial():
    return collections.OrderedDict(
        model=tff.learning.models.ModelWeights.from_model(tiny.model_fn()),
        generator=generator_lib.init_generator(
            noise_dim=noise_dim, num_classes=tiny.NUM_CLASSES, hidden=hidden,
            feature_dim=feature_dim, seed=4))

  return initial


CAPACITY = 3
GEN = dict(steps=2, batch_size=4, noise_dim=2, weight_decay=0.01,
           diversity_weight=1.0)


def _generator_update_type(weights_type):
  heads = collections.OrderedDict(
      kernel=tff.TensorType(F32, [CAPACITY, tiny.NUM_FEATURES,
                                  tiny.NUM_CLASSES]),
      bias=tff.TensorType(F32, [CAPACITY, tiny.NUM_CLASSES]),
      counts=tff.TensorType(F32, [CAPACITY, tiny.NUM_CLASSES]))
  return tff.to_type(collections.OrderedDict(
      models=collections.OrderedDict(
          model=_delta_type(weights_type.model)),
      knowledge=collections.OrderedDict(heads=collections.OrderedDict(
          values=heads, count=tff.TensorType(np.int32)))))


def _generator_finalizer(learning_rate, lr_decay, server_learning_rate):
  weights_type = _generator_weights().type_signature.result
  return finalizers.build_finalizer(*finalizers.generator_step(
      weights_type=weights_type,
      update_type=_generator_update_type(weights_type),
      server_learning_rate=server_learning_rate,
      # Its own learning rate is replaced every round by the decayed one.
      generator_optimizer=tff.learning.optimizers.build_adam(
          learning_rate=0.5),
      learning_rate=learning_rate, lr_decay=lr_decay, smoothing=1.0, **GEN))


def _generator_update(weights, rng, count=2):
  kernel = np.zeros((CAPACITY, tiny.NUM_FEATURES, tiny.NUM_CLASSES), F32)
  bias = np.zeros((CAPACITY, tiny.NUM_CLASSES), F32)
  counts = np.zeros((CAPACITY, tiny.NUM_CLASSES), F32)
  kernel[:count] = rng.normal(size=kernel[:count].shape)
  bias[:count] = rng.normal(size=bias[:count].shape)
  counts[:count] = rng.integers(1, 5, size=counts[:count].shape)
  return collections.OrderedDict(
      models=collections.OrderedDict(
          model=_random_like(weights['model'].trainable, rng)),
      knowledge=collections.OrderedDict(heads=collections.OrderedDict(
          values=collections.OrderedDict(kernel=kernel, bias=bias,
                                         counts=counts),
          count=np.int32(count))))


class GeneratorFinalizerComputationTest(tf.test.TestCase):

  def test_type_signature(self):
    weights_type = _generator_weights().type_signature.result
    finalizer = _generator_finalizer(0.01, 0.9, 1.0)
    self.assertIsInstance(finalizer, tff.learning.templates.FinalizerProcess)
    params = weights_type.generator.params
    moments = tff.StructType([(None, t) for t in params])
    state_type = tff.FederatedType(tff.StructType([
        ('generator_optimizer', tff.StructType([
            ('learning_rate', tff.TensorType(F32)),
            ('beta_1', tff.TensorType(F32)),
            ('beta_2', tff.TensorType(F32)),
            ('epsilon', tff.TensorType(F32)),
            ('step', tff.TensorType(np.int32)),
            ('accumulator', moments),
            ('preconditioner', moments),
        ])),
        ('round', tff.TensorType(np.int32)),
    ]), tff.SERVER)
    tff.test.assert_types_equivalent(finalizer.initialize.type_signature,
                                     tff.FunctionType(None, state_type))
    tff.test.assert_types_equivalent(
        finalizer.next.type_signature,
        tff.FunctionType(
            tff.StructType([
                ('state', state_type),
                ('weights', tff.FederatedType(weights_type, tff.SERVER)),
                ('update', tff.FederatedType(
                    _generator_update_type(weights_type), tff.SERVER)),
            ]),
            tff.templates.MeasuredProcessOutput(
                state_type, tff.FederatedType(weights_type, tff.SERVER),
                tff.FederatedType(tff.StructType([
                    ('loss_first_step', tff.TensorType(F32)),
                    ('loss_last_step', tff.TensorType(F32)),
                    ('clients_collected', tff.TensorType(np.int32)),
                ]), tff.SERVER))))


class GeneratorFinalizerExecutionTest(tf.test.TestCase,
                                      parameterized.TestCase):

  @parameterized.named_parameters(('fedavg_step', 1.0), ('half_step', 0.5))
  def test_two_rounds_model_step_round_and_generator_adam_state(
      self, server_learning_rate):
    learning_rate, lr_decay = 0.01, 0.9
    finalizer = _generator_finalizer(learning_rate, lr_decay,
                                     server_learning_rate)
    weights = _generator_weights()()
    rng = np.random.default_rng(5)
    state = finalizer.initialize()
    self.assertEqual(state['round'], 0)
    self.assertEqual(state['generator_optimizer']['step'], 0)
    # The same training outside TFF: Adam's state with the round's rate.
    adam = tff.learning.optimizers.build_adam(learning_rate=0.5)
    expected_adam = adam.initialize(tuple(
        tf.TensorSpec(np.shape(p), tf.float32)
        for p in weights['generator']['params'].values()))
    expected_generator = weights['generator']
    for round_num in (0, 1):
      update = _generator_update(weights, rng, count=2 + round_num)
      output = finalizer.next(state, weights, update)
      state = output.state

      # The model: w - server_lr * mean delta.
      model = output.result['model']
      for got, w, d in zip(model.trainable, weights['model'].trainable,
                           update['models']['model']):
        self.assertAllClose(got, w - F32(server_learning_rate) * d,
                            rtol=1e-6, atol=1e-7)
      # The round and the generator's Adam state advance.
      self.assertEqual(state['round'], round_num + 1)
      optimizer_state = state['generator_optimizer']
      self.assertEqual(optimizer_state['step'], GEN['steps'] * (round_num + 1))
      self.assertAllClose(optimizer_state['learning_rate'],
                          learning_rate * lr_decay**round_num)
      self.assertEqual(output.measurements['clients_collected'],
                       2 + round_num)

      expected_adam = adam.set_hparams(expected_adam, collections.OrderedDict(
          learning_rate=learning_rate * lr_decay**round_num))
      heads = update['knowledge']['heads']['values']
      train = tf.function(lambda generator, adam_state, *heads: (
          generator_lib.train_generator(generator, adam, adam_state, *heads,
                                        seed=tf.constant(round_num), **GEN)))
      expected_generator, expected_adam, losses = train(
          expected_generator, expected_adam, heads['kernel'], heads['bias'],
          heads['counts'])
      # The same steps, traced as TFF traces them (b1 feeds a BatchNorm: its
      # gradient is rounding noise, which Adam amplifies; eager execution
      # rounds differently).
      self.assertAllClose(output.result['generator'], expected_generator,
                          rtol=1e-5, atol=1e-7)
      self.assertAllClose(optimizer_state['accumulator'],
                          expected_adam['accumulator'], rtol=1e-5, atol=1e-9)
      self.assertAllClose(output.measurements['loss_first_step'], losses[0],
                          rtol=1e-4)
      self.assertAllClose(output.measurements['loss_last_step'], losses[-1],
                          rtol=1e-4)
      # The generator trained: its parameters and running statistics moved.
      self.assertNotAllClose(output.result['generator']['params']['w1'],
                             weights['generator']['params']['w1'])
      self.assertNotAllClose(output.result['generator']['running_mean'],
                             weights['generator']['running_mean'])
      weights = output.result


if __name__ == '__main__':
  tf.test.main()
