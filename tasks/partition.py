"""Deterministic partitions of training examples over clients (numpy only).

`partition(labels, ...)` returns one index array per client; every example
lands on exactly one client. Methods:

- `iid`: a uniform random split into near-equal parts.
- `dirichlet`: label skew (Hsu, Qi, Brown 2019): for each class, proportions
  p ~ Dir(alpha * 1_K) over the K clients and the class's examples split by p.
  Smaller alpha, more skew. Redrawn (up to 1,000 times) until every client
  has at least `min_client_size` examples.
- `shards`: pathological label skew (McMahan et al. 2017): each client holds
  exactly k classes. The classes are permuted by the seed and dealt round-robin
  (client c gets classes c*k .. c*k+k-1 mod C), and each class's examples are
  split evenly among the clients holding it. (McMahan's sorted shards of equal
  size straddle class boundaries unless they divide the class sizes; this
  keeps "k classes per client" exact.) Needs K * k >= C.
- `quantity`: quantity skew (Li et al., NIID-Bench 2022): client sizes
  proportional to q ~ Dir(alpha * 1_K), labels IID.
"""

import numpy as np

METHODS = ('iid', 'dirichlet', 'shards', 'quantity')
_MAX_DRAWS = 1000


def partition(
    labels: np.ndarray,
    *,
    num_clients: int,
    method: str,
    seed: int,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    min_client_size: int = 1,
) -> list[np.ndarray]:
  """Splits `range(len(labels))` into `num_clients` disjoint sorted index arrays."""
  labels = np.asarray(labels)
  n = len(labels)
  if method not in METHODS:
    raise ValueError(f'partition must be one of {METHODS}; got {method!r}.')
  if not 1 <= num_clients <= n:
    raise ValueError(
        f'num_clients must be in [1, {n}] (the training examples); got'
        f' {num_clients}.'
    )
  if method in ('dirichlet', 'quantity') and not alpha > 0:
    raise ValueError(f'alpha must be > 0; got {alpha}.')
  if min_client_size * num_clients > n:
    raise ValueError(
        f'{num_clients} clients with at least {min_client_size} examples each'
        f' need {min_client_size * num_clients} examples; there are {n}.'
    )
  rng = np.random.default_rng(seed)
  if method == 'iid':
    parts = np.array_split(rng.permutation(n), num_clients)
  elif method == 'shards':
    num_classes = len(np.unique(labels))
    if not 1 <= classes_per_client <= num_classes:
      raise ValueError(
          f'classes_per_client must be in [1, {num_classes}]; got'
          f' {classes_per_client}.'
      )
    if num_clients * classes_per_client < num_classes:
      raise ValueError(
          f'shards: num_clients * classes_per_client = {num_clients} *'
          f' {classes_per_client} must be >= the {num_classes} classes, or'
          ' some examples would land on no client.'
      )
    classes = rng.permutation(np.unique(labels))
    holders = {c: [] for c in classes}
    for client in range(num_clients):
      for j in range(classes_per_client):
        holders[classes[(client * classes_per_client + j) % num_classes]].append(
            client
        )
    parts = [[] for _ in range(num_clients)]
    for label, clients in holders.items():
      members = rng.permutation(np.flatnonzero(labels == label))
      for client, piece in zip(clients, np.array_split(members, len(clients))):
        parts[client].extend(piece)
  else:
    parts = _draw_until_large_enough(
        labels, num_clients, method, alpha, min_client_size, rng
    )
  return [np.sort(p).astype(np.int64) for p in parts]


def _draw_until_large_enough(labels, num_clients, method, alpha, min_size, rng):
  for _ in range(_MAX_DRAWS):
    if method == 'dirichlet':
      parts = [[] for _ in range(num_clients)]
      for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(alpha * np.ones(num_clients))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for client, piece in enumerate(np.split(members, cuts)):
          parts[client].extend(piece)
      parts = [np.array(p, dtype=np.int64) for p in parts]
    else:
      shares = rng.dirichlet(alpha * np.ones(num_clients))
      cuts = (np.cumsum(shares)[:-1] * len(labels)).astype(int)
      parts = np.split(rng.permutation(len(labels)), cuts)
    if min(len(p) for p in parts) >= min_size:
      return parts
  raise ValueError(
      f'No {method} partition with alpha={alpha} gave every one of'
      f' {num_clients} clients at least {min_size} examples in {_MAX_DRAWS}'
      ' draws: raise alpha or lower num_clients.'
  )


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
  """Mean total-variation distance of client label distributions from the global one."""
  labels = np.asarray(labels)
  classes = np.unique(labels)
  overall = np.array([np.mean(labels == c) for c in classes])
  distances = []
  for part in parts:
    local = np.array([np.mean(labels[part] == c) for c in classes])
    distances.append(0.5 * np.abs(local - overall).sum())
  return float(np.mean(distances))
