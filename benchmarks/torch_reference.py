r"""Plain PyTorch FedAvg: what `benchmarks.benchmark` times ours against.

No FL library, only torch: the PyTorch peers' CNN (Conv2D 32 3x3 same + ReLU
+ MaxPool 2, Dense 64 ReLU, Dense 10: 33,802 parameters on 8x8x1 digits), or
FedDF's ResNet-8 (`model='resnet8'`: the CIFAR ResNet of Lin et al. 2020, a
3x3 convolution of 16 channels, then 3 stages of one basic block each, 16,
32 and 64 channels, BatchNorm, global average pooling, a dense head; 78,042
parameters on 32x32x3 images); each sampled client trains a copy of the
server model with E epochs of SGD over its full batches of B (a new random
order each epoch, the last partial batch dropped, as PFLlib's data loaders
do); the server model becomes the clients' models averaged with weights
proportional to the examples each trained on (what
`tff_kd.algorithms.build_fedavg` computes, by averaging the updates). Only
parameters are averaged, as ours averages only trainable weights:
BatchNorm's running statistics are buffers, not parameters.

It runs in a Python process of its own, never beside TensorFlow: torch
2.13 needs typing_extensions >= 4.10 (it imports `TypeIs`), and
typing_extensions >= 4.6 breaks TF 2.14's tracing of some structures
(`TypeError: this __dict__ descriptor does not support '_DictWrapper'
objects`). So torch and its dependencies (requirements-bench.lock) live in
their own directory, `.venv-bench` (`make bench`: `pip install --no-deps
--target .venv-bench`), never in `.venv`, and the benchmark starts this
module with the same interpreter and `PYTHONPATH=.venv-bench` first (its
typing_extensions then shadows `.venv`'s in this process only). It imports
nothing but numpy and torch (argparse, not absl), so its start-up is
torch's. Two commands:

  python -m benchmarks.torch_reference serve
  python -m benchmarks.torch_reference run --data=CLIENTS.npz --epochs=1 \
    --batch_size=16 --learning_rate=0.05 [--seed=0 --threads=0 \
    --launched_at=EPOCH_SECONDS]

`serve`: the benchmark drives it round by round over a pipe, so its rounds
interleave with ours. Each request is a pickled tuple written to its stdin;
it answers each with one pickled `('ok', value)` or `('error', traceback)`
on its stdout (anything printed goes to stderr). On start, before any
request, it sends `('ready', {'torch': version, 'import_seconds': s})`.

  ('start', kwargs)  -> builds `FedAvg(**kwargs)` (`model` picks the
                        model); value: {'threads': ..., 'build_seconds': s}
  ('round', ids)     -> runs a round; value: {'steps': SGD steps,
                        'seconds': the round's time, measured here}
  ('weights',)       -> the server model's parameters, numpy arrays
  ('stop',)          -> value None; then it exits

`run`: the whole process the benchmark times against ours: loads the
clients and the schedule of rounds from an .npz (`x0, y0, x1, y1, ...` and
`schedule`, rounds x clients; the benchmark writes it from the same split as
ours, as PFLlib's generators write each client's data before training),
trains every round and prints one JSON line: its phases, [name, seconds],
from `--launched_at` (the parent's clock when it started this process; time
before the module runs is the interpreter's start) to the last round, and
the SGD steps.
"""

import time

_START = time.time()  # For `run`'s phases: what the imports take.

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import json
import pickle
import sys
import traceback

import numpy as np
import torch

_IMPORTED = time.time()


def build_cnn(input_shape, num_classes: int) -> torch.nn.Module:
  """The peers' CNN for images of `input_shape` (H, W, C); logits out."""
  height, width, channels = input_shape
  return torch.nn.Sequential(
      torch.nn.Conv2d(channels, 32, 3, padding=1), torch.nn.ReLU(),
      torch.nn.MaxPool2d(2), torch.nn.Flatten(),
      torch.nn.Linear(32 * (height // 2) * (width // 2), 64), torch.nn.ReLU(),
      torch.nn.Linear(64, num_classes),
  )


class _BasicBlock(torch.nn.Module):
  """ResNet's basic block: two 3x3 convolutions, BatchNorm, a shortcut."""

  def __init__(self, in_channels: int, channels: int, stride: int):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(in_channels, channels, 3, stride=stride,
                                 padding=1, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(channels)
    self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    self.bn2 = torch.nn.BatchNorm2d(channels)
    self.shortcut = torch.nn.Identity()
    if stride != 1 or in_channels != channels:
      self.shortcut = torch.nn.Sequential(
          torch.nn.Conv2d(in_channels, channels, 1, stride=stride,
                          bias=False),
          torch.nn.BatchNorm2d(channels))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def build_resnet8(input_shape, num_classes: int) -> torch.nn.Module:
  """FedDF's ResNet-8 (module docstring) for `input_shape` (H, W, C)."""
  channels = input_shape[-1]
  return torch.nn.Sequential(
      torch.nn.Conv2d(channels, 16, 3, padding=1, bias=False),
      torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
      _BasicBlock(16, 16, 1), _BasicBlock(16, 32, 2), _BasicBlock(32, 64, 2),
      torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
      torch.nn.Linear(64, num_classes),
  )


MODELS = {'cnn': build_cnn, 'resnet8': build_resnet8}


class FedAvg:
  """The server model and every client's data; `run_round` runs a round."""

  def __init__(self, clients, num_classes: int, *, epochs: int,
               batch_size: int, learning_rate: float, seed: int = 0,
               num_threads: int = 0, model: str = 'cnn'):
    """Takes the clients' data and builds the models.

    Args:
      clients: per client, (x, y) numpy arrays, x of shape (N, H, W, C).
      num_classes: outputs of the model.
      epochs: local epochs E.
      batch_size: local batch size B.
      learning_rate: client SGD's.
      seed: of the initial model and the clients' batch orders.
      num_threads: if > 0, `torch.set_num_threads(num_threads)` (for the
        whole process); 0 keeps torch's default (one per core).
      model: a key of `MODELS`: the peers' CNN or FedDF's ResNet-8.
    """
    if num_threads:
      torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    self._generator = torch.Generator().manual_seed(seed)
    self._clients = [
        (torch.from_numpy(np.ascontiguousarray(
            np.asarray(x, np.float32).transpose(0, 3, 1, 2))),
         torch.from_numpy(np.asarray(y, np.int64)))
        for x, y in clients]
    input_shape = np.shape(clients[0][0])[1:]
    self.model = MODELS[model](input_shape, num_classes)
    self._client_model = MODELS[model](input_shape, num_classes)
    self._optimizer = torch.optim.SGD(
        self._client_model.parameters(), lr=learning_rate)
    self._epochs, self._batch_size = epochs, batch_size

  def run_round(self, client_ids) -> int:
    """Trains clients `client_ids` and averages them; returns the SGD steps."""
    server = list(self.model.parameters())
    client = list(self._client_model.parameters())
    total = [torch.zeros_like(p) for p in server]
    steps = 0
    for k in client_ids:
      x, y = self._clients[k]
      with torch.no_grad():
        for mine, theirs in zip(client, server):
          mine.copy_(theirs)
      client_steps = 0
      for _ in range(self._epochs):
        order = torch.randperm(len(y), generator=self._generator)
        for end in range(self._batch_size, len(y) + 1, self._batch_size):
          batch = order[end - self._batch_size:end]
          self._optimizer.zero_grad()
          torch.nn.functional.cross_entropy(
              self._client_model(x[batch]), y[batch]).backward()
          self._optimizer.step()
          client_steps += 1
      with torch.no_grad():
        for t, p in zip(total, client):
          t.add_(p, alpha=client_steps * self._batch_size)
      steps += client_steps
    if steps:
      with torch.no_grad():
        for p, t in zip(server, total):
          p.copy_(t / (steps * self._batch_size))
    return steps

  def weights(self):
    """The server model's parameters as numpy arrays (torch's layouts)."""
    return [p.detach().numpy().copy() for p in self.model.parameters()]


def describe() -> str:
  """torch's version and thread settings, for the report."""
  return (f'torch {torch.__version__}, `torch.get_num_threads()` = '
          f'{torch.get_num_threads()}, `get_num_interop_threads()` = '
          f'{torch.get_num_interop_threads()}')


def serve(requests, replies) -> None:
  """Answers the requests read from `requests` (module docstring)."""

  def reply(*message):
    pickle.dump(message, replies, protocol=pickle.HIGHEST_PROTOCOL)
    replies.flush()

  reply('ready', {'torch': str(torch.__version__),
                  'import_seconds': _IMPORTED - _START})
  fedavg = None
  while True:
    try:
      request = pickle.load(requests)
    except EOFError:  # The benchmark has gone: so do we.
      return
    try:
      command, *args = request
      if command == 'start':
        start = time.perf_counter()
        fedavg = FedAvg(**args[0])
        reply('ok', {'threads': describe(),
                     'build_seconds': time.perf_counter() - start})
      elif command == 'round':
        start = time.perf_counter()
        steps = fedavg.run_round(args[0])
        reply('ok', {'steps': steps,
                     'seconds': time.perf_counter() - start})
      elif command == 'weights':
        reply('ok', fedavg.weights())
      elif command == 'stop':
        reply('ok', None)
        return
      else:
        raise ValueError(f'Unknown request {command!r}.')
    except Exception:  # pylint: disable=broad-except
      reply('error', traceback.format_exc())


def run(args) -> dict:
  """The whole-process run of the `run` command; returns its report."""
  loaded = time.time()
  with np.load(args.data) as data:
    schedule = data['schedule']
    clients = [(data[f'x{k}'], data[f'y{k}'])
               for k in range(sum(1 for name in data.files
                                  if name.startswith('x')))]
    num_classes = int(data['num_classes'])
  loaded, start = time.time(), loaded
  phases = [
      ['interpreter start', _START - args.launched_at],
      ['import numpy, torch', _IMPORTED - _START],
      ['load the clients\' data (.npz)', loaded - start],
  ]
  fedavg = FedAvg(clients, num_classes, epochs=args.epochs,
                  batch_size=args.batch_size,
                  learning_rate=args.learning_rate, seed=args.seed,
                  num_threads=args.threads)
  built = time.time()
  phases.append(['build the models', built - loaded])
  steps = fedavg.run_round(schedule[0])
  first = time.time()
  phases.append(['round 1', first - built])
  for clients_of_round in schedule[1:]:
    steps += fedavg.run_round(clients_of_round)
  phases.append([f'rounds 2-{len(schedule)}', time.time() - first])
  return {'phases': phases, 'steps': steps, 'threads': describe()}


def main(argv) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.torch_reference',
      description='Plain PyTorch FedAvg, the reference of '
      'benchmarks.benchmark.')
  commands = parser.add_subparsers(dest='command', required=True)
  commands.add_parser('serve', help='Answer the benchmark over stdin/stdout.')
  whole = commands.add_parser('run', help='Train every round of an .npz.')
  whole.add_argument('--data', required=True)
  whole.add_argument('--epochs', type=int, required=True)
  whole.add_argument('--batch_size', type=int, required=True)
  whole.add_argument('--learning_rate', type=float, required=True)
  whole.add_argument('--seed', type=int, default=0)
  whole.add_argument('--threads', type=int, default=0)
  whole.add_argument('--launched_at', type=float, default=_START)
  args = parser.parse_args(argv)
  if args.command == 'serve':
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr  # A stray print must not break the protocol.
    serve(sys.stdin.buffer, replies)
  else:
    print(json.dumps(run(args)))


if __name__ == '__main__':
  main(sys.argv[1:])
