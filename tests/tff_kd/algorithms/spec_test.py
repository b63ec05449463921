"""Specs and configs: one default per setting; a new algorithm as DESIGN.md
adds one (its block run as written) gets its flags and trains."""

import dataclasses
import inspect
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from binaries import registry
import tasks
from tff_kd import algorithms
from tff_kd import optimizers
from tff_kd import server_distillation

_DESIGN = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'docs',
                       'DESIGN.md')


def _design_example() -> str:
  with open(_DESIGN) as f:
    text = f.read()
  section = text.split('\n## Adding an algorithm\n', 1)[1].split('\n## ', 1)[0]
  blocks = re.findall(r'```python\n(.*?)```', section, re.DOTALL)
  assert len(blocks) == 1, f'{len(blocks)} python blocks'
  return blocks[0]


def _builder(spec):
  return getattr(algorithms, f'build_{spec.name}')


class SpecTest(tf.test.TestCase):

  def test_builders_take_their_configs_defaults(self):
    # A setting the builder also takes has the config's default: one default
    # per setting (the builder's is the config's field, not a literal).
    checked = 0
    for spec in algorithms.SPECS:
      fields = {f.name: f.default for f in dataclasses.fields(spec.config)}
      parameters = inspect.signature(_builder(spec)).parameters
      for name in fields.keys() & parameters.keys():
        if parameters[name].default is None:
          continue  # Data, not a setting (FedDF's validation split).
        self.assertEqual(parameters[name].default, fields[name],
                         f'build_{spec.name}({name})')
        checked += 1
    self.assertGreater(checked, 15)
    # FedDF's distillation defaults are the shared --distill_* ones.
    distillation = server_distillation.DistillationConfig()
    parameters = inspect.signature(algorithms.build_feddf).parameters
    for field in ('steps', 'batch_size', 'learning_rate', 'eval_every',
                  'patience'):
      name = (f'distill_{field}' if f'distill_{field}' in parameters
              else field)
      self.assertEqual(parameters[name].default, getattr(distillation, field),
                       name)

  def test_registry_flags_come_from_the_configs(self):
    fedgen = registry.get('fedgen')
    self.assertEqual(fedgen.hparams['fedgen_alpha'].default,
                     algorithms.fedgen.FedGenConfig.alpha)
    self.assertEqual(
        registry.get('dsfl').hparams['distill_patience'].default,
        server_distillation.DistillationConfig.patience)
    self.assertEqual(list(registry.ALGORITHMS),
                     [spec.name for spec in algorithms.SPECS])
    config = fedgen.config({'fedgen_alpha': 0.5, 'fedgen_beta': 2.0})
    self.assertEqual((config.alpha, config.beta, config.generator_steps),
                     (0.5, 2.0, algorithms.fedgen.FedGenConfig.generator_steps))
    with self.assertRaisesRegex(TypeError, r"fedgen takes no \['gen_alpha'\]"):
      fedgen.build(None, client_optimizer=None, server_optimizer=None,
                   clients_per_round=1, gen_alpha=1.0)

  def test_design_example_gets_its_flag_and_trains(self):
    namespace = {}
    exec(compile(_design_example(), _DESIGN, 'exec'), namespace)  # pylint: disable=exec-used
    algorithm = registry.Algorithm(namespace['SPEC'])
    self.assertEqual(list(algorithm.hparams), ['fedavgm_momentum'])
    self.assertEqual(algorithm.hparams['fedavgm_momentum'].default, 0.9)
    self.assertFalse(algorithm.hparams['fedavgm_momentum'].check(-1.0))
    task = tasks.create_task(
        'digits', model='mlp', num_clients=4, seed=0,
        train_client_spec=tff.simulation.baselines.ClientSpec(
            num_epochs=1, batch_size=16))
    process = algorithm.build(
        task, client_optimizer=optimizers.OptimizerConfig(name='sgd', learning_rate=0.1),
        server_optimizer=optimizers.OptimizerConfig(name='sgd', learning_rate=1.0),
        clients_per_round=2, fedavgm_momentum=0.5)
    state = process.initialize()
    clients = [task.client_dataset(str(k), 0) for k in (0, 1)]
    output = process.next(state, clients)
    self.assertEqual(float(output.state.finalizer['momentum']), 0.5)
    before, after = (process.get_model_weights(s).trainable
                     for s in (state, output.state))
    self.assertFalse(all(np.array_equal(a, b) for a, b in zip(before, after)))


if __name__ == '__main__':
  tf.test.main()
