"""Plain PyTorch FedAvg: the reference `binaries.benchmark` times ours against.

No FL library, only torch: the PyTorch peers' CNN (Conv2D 32 3x3 same + ReLU
+ MaxPool 2, Dense 64 ReLU, Dense 10: 33,802 parameters on 8x8x1 digits);
each sampled client trains a copy of the server model with E epochs of SGD
over its full batches of B (a new random order each epoch, the last partial
batch dropped, as PFLlib's data loaders do); the server model becomes the
clients' models averaged with weights proportional to the examples each
trained on (what `tff_kd.algorithms.build_fedavg` computes, by averaging the
updates). Needs torch: requirements-bench.lock, installed by `make bench`.
"""

import numpy as np
import torch


def build_cnn(input_shape, num_classes: int) -> torch.nn.Module:
  """The peers' CNN for images of `input_shape` (H, W, C); logits out."""
  height, width, channels = input_shape
  return torch.nn.Sequential(
      torch.nn.Conv2d(channels, 32, 3, padding=1), torch.nn.ReLU(),
      torch.nn.MaxPool2d(2), torch.nn.Flatten(),
      torch.nn.Linear(32 * (height // 2) * (width // 2), 64), torch.nn.ReLU(),
      torch.nn.Linear(64, num_classes),
  )


class FedAvg:
  """The server model and every client's data; `run_round` runs a round."""

  def __init__(self, clients, num_classes: int, *, epochs: int,
               batch_size: int, learning_rate: float, seed: int = 0,
               num_threads: int = 0):
    """Takes the clients' data and builds the models.

    Args:
      clients: per client, (x, y) numpy arrays, x of shape (N, H, W, C).
      num_classes: outputs of the model.
      epochs: local epochs E.
      batch_size: local batch size B.
      learning_rate: client SGD's.
      seed: of the initial model and the clients' batch orders.
      num_threads: if > 0, `torch.set_num_threads(num_threads)` (for the
        whole process); 0 keeps torch's default.
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
    self.model = build_cnn(input_shape, num_classes)
    self._client_model = build_cnn(input_shape, num_classes)
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


def describe() -> str:
  """torch's version and thread settings, for the report."""
  return (f'torch {torch.__version__}, `torch.get_num_threads()` = '
          f'{torch.get_num_threads()}, `get_num_interop_threads()` = '
          f'{torch.get_num_interop_threads()}')
