"""The README's examples run as written and do what they say.

"Bring your own Keras model" trains the model it defines; every block of
"Your data" runs: the Python ones executed unchanged but for their output
paths (temporary ones), the shell ones command by command, in process
(`python -c CODE` executed, `python -m binaries.train ARGS` as
`train.main` on the parsed ARGS). A block's `runtime.LocalRuntime()`
starts a worker of its own, nested in the test session's (runtimes nest:
the session's context is restored on exit).
"""

import contextlib
import io
import os
import re
import shlex

from absl import flags
from absl.testing import flagsaver
import pytest
import tensorflow as tf

from binaries import common
from binaries import train
from tff_kd import run_directory

pytestmark = pytest.mark.slow  # pytest.ini

FLAGS = flags.FLAGS

_README = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                       'README.md')
_SECTION = '## Bring your own Keras model'
_OUTPUT_DIR = "'/tmp/byo_model'"
# The README's CNN: conv 3*3*1*32 + 32, dense (4*4*32)*64 + 64, head
# 64*10 + 10.
_PARAMS = 320 + 32_832 + 650


def _blocks(section: str) -> list[tuple[str, str]]:
  """(language, code) of every fenced block of README.md's `section`."""
  with open(_README) as f:
    text = f.read()
  body = text.split(f'\n{section}\n', 1)[1].split('\n## ', 1)[0]
  return re.findall(r'```(\w*)\n(.*?)```', body, re.DOTALL)


def _example() -> str:
  blocks = [code for language, code in _blocks(_SECTION)
            if language == 'python']
  if len(blocks) != 1:
    raise AssertionError(f'{_SECTION!r} has {len(blocks)} python blocks.')
  return blocks[0]


class ReadmeExampleTest(tf.test.TestCase):

  def test_bring_your_own_keras_model(self):
    code = _example()
    self.assertEqual(code.count(_OUTPUT_DIR), 1)
    root = self.create_tempdir().full_path
    code = compile(code.replace(_OUTPUT_DIR, repr(root)), _README, 'exec')
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
      exec(code, namespace)  # pylint: disable=exec-used

    task, rows = namespace['task'], namespace['rows']
    self.assertEqual(task.model_name, 'torch_cnn')
    self.assertEqual([r['round_num'] for r in rows], ['0', '1', '2'])
    # FedAvg trained the README's model: each client received its weights.
    per_client = 'client_work/communication/bytes_downloaded_per_client'
    self.assertEqual(float(rows[-1][per_client]), 4 * _PARAMS)
    # And learned: the test loss fell over 2 rounds.
    loss = [float(r['evaluation/test/loss']) for r in rows]
    self.assertLess(loss[2], loss[0])
    self.assertTrue(
        os.path.isdir(os.path.join(root, 'checkpoints', 'torch_cnn')))
    self.assertEqual(stdout.getvalue().splitlines()[-1],
                     rows[-1]['evaluation/test/accuracy'])


class TffBaselineTest(tf.test.TestCase):

  def test_the_block_trains_fedavg_on_tffs_task(self):
    blocks = [code for language, code in _blocks("## TFF's baseline tasks")
              if language == 'python']
    self.assertLen(blocks, 1)
    root = self.create_tempdir().full_path
    self.assertEqual(blocks[0].count("'/tmp/tff_baseline'"), 1)
    code = blocks[0].replace("'/tmp/tff_baseline'", repr(root))
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
      exec(compile(code, _README, 'exec'), namespace)  # pylint: disable=exec-used
    rows = namespace['rows']
    self.assertEqual([r['round_num'] for r in rows], ['0', '1'])
    self.assertGreater(
        float(rows[-1]['client_work/communication/bytes_uploaded']), 0)
    self.assertEqual(stdout.getvalue().splitlines()[-1],
                     rows[-1]['evaluation/test/accuracy'])


class YourDataTest(tf.test.TestCase):
  """Every block of "Your data", in order: the Python ones share a
  namespace (the second continues the first), the shell ones run in a
  temporary root with the file paths redirected into it."""

  def _shell(self, code, root):
    """Runs each command of a shell block; returns the train runs' rows."""
    runs = []
    for line in code.strip().splitlines():
      argv = shlex.split(line.replace('/tmp/', root + '/'), comments=True)
      if argv[:2] == ['python', '-c']:
        exec(compile(argv[2], _README, 'exec'), {})  # pylint: disable=exec-used
        continue
      self.assertEqual(argv[:3], ['python', '-m', 'binaries.train'], line)
      argv = ['train'] + argv[3:] + [f'--root_output_dir={root}']
      with flagsaver.flagsaver():
        FLAGS(argv)
        settings = common.Settings.from_flags()
        if settings.task.startswith('federated_') and not (
            settings.use_synthetic_data):
          # The real data is not in this machine's TFF cache: the run stops
          # before training, naming where it looked and the flag.
          empty = self.create_tempdir().full_path
          FLAGS.data_dir = empty
          with self.assertRaisesRegex(flags.ValidationError,
                                      f'{empty}.*--use_synthetic_data'):
            train.main(argv[:1])
          runs.append(None)
          continue
        train.main(argv[:1])
        name = common.default_run_name(settings, FLAGS.algorithm)
      runs.append(run_directory.read_metrics(
          run_directory.output_paths(root, name)['metrics_csv']))
    return runs

  def test_every_block_runs(self):
    blocks = _blocks('## Your data')
    self.assertEqual([language for language, _ in blocks],
                     ['python', 'python', '', ''])
    root = self.create_tempdir().full_path
    namespace = {}
    printed, held_out = [], []
    for language, code in blocks[:2]:
      self.assertEqual(code.count("'/tmp/your_data'"),
                       int(not namespace))
      code = code.replace("'/tmp/your_data'", repr(root))
      with contextlib.redirect_stdout(io.StringIO()) as stdout:
        exec(compile(code, _README, 'exec'), namespace)  # pylint: disable=exec-used
      printed.append(stdout.getvalue().splitlines()[-1].split())
      task = namespace['task']
      writers = {str(w) for w in range(40)} - {
          c.replace('writer_', '') for c in task.client_ids}
      held_out.append(sum(str(w) in writers
                          for w in namespace['writer'][:1500]))
      self.assertLen(task.validation[0], round(held_out[-1] / 2))

    # From arrays: 40 writers, 8 held out (their examples half validation,
    # half public), FedDF distilled on the public ones.
    clients, public, accuracy = printed[0]
    self.assertEqual(clients, '32')
    self.assertEqual(int(public), held_out[0] - round(held_out[0] / 2))
    self.assertBetween(float(accuracy), 0.0, 1.0)
    # From a ClientData: the same writers under other keys.
    self.assertEqual(printed[1], ['32', str(held_out[1])])
    self.assertEqual(namespace['task'].num_classes, 10)

    npz_runs = self._shell(blocks[2][1], root)
    self.assertLen(npz_runs, 2)
    for rows in npz_runs:
      self.assertEqual([r['round_num'] for r in rows], ['0', '1'])
    federated_runs = self._shell(blocks[3][1], root)
    self.assertIsNone(federated_runs[0])
    self.assertEqual([r['round_num'] for r in federated_runs[1]], ['0', '1'])


if __name__ == '__main__':
  tf.test.main()
