"""Our algorithms accept the model_fn and data of a TFF baseline task."""

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import algorithms
from tff_kd import evaluation


class BaselineTaskTest(tf.test.TestCase):

  def test_fedavg_and_fedntd_run_two_rounds_on_synthetic_emnist(self):
    task = tff.simulation.baselines.emnist.create_character_recognition_task(
        tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=8,
                                            max_elements=16),
        model_id='cnn_dropout',
        only_digits=True,
        use_synthetic_data=True,
    )
    clients = task.datasets.sample_train_clients(2, random_seed=0)
    num_examples = sum(
        int(tf.shape(batch['label'] if 'label' in batch else batch['y'])[0])
        if isinstance(batch, dict) else int(tf.shape(batch[1])[0])
        for client in clients for batch in client
    )
    sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.01)
    evaluate = evaluation.build_evaluator(task.model_fn)
    test_data = task.datasets.get_centralized_test_data()
    for build in [algorithms.build_fedavg, algorithms.build_fedntd]:
      process = build(task.model_fn, sgd)
      state = process.initialize()
      for _ in range(2):
        output = process.next(state, clients)
        state = output.state
      train = output.metrics['client_work']['train']
      self.assertEqual(train['num_examples'], num_examples)
      metrics = evaluate(process.get_model_weights(state), test_data)
      self.assertBetween(metrics['accuracy'], 0.0, 1.0)
      self.assertGreater(metrics['num_examples'], 0)


if __name__ == '__main__':
  tf.test.main()
