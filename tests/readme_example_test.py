"""The README's "Bring your own Keras model" example runs as written and
trains the model it defines.

The block is taken from README.md and executed unchanged but for its output
directory (a temporary one). Its `runtime.LocalRuntime()` starts a worker of
its own, nested in the test session's (runtimes nest: the session's context
is restored on exit).
"""

import contextlib
import io
import os
import re

import tensorflow as tf

_README = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                       'README.md')
_SECTION = '## Bring your own Keras model'
_OUTPUT_DIR = "'/tmp/byo_model'"
# The README's CNN: conv 3*3*1*32 + 32, dense (4*4*32)*64 + 64, head
# 64*10 + 10.
_PARAMS = 320 + 32_832 + 650


def _example() -> str:
  with open(_README) as f:
    text = f.read()
  section = text.split(f'\n{_SECTION}\n', 1)[1].split('\n## ', 1)[0]
  blocks = re.findall(r'```python\n(.*?)```', section, re.DOTALL)
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


if __name__ == '__main__':
  tf.test.main()
