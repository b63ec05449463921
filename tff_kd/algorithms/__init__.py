"""Federated learning algorithms, each a `build_*` returning a LearningProcess."""

from tff_kd.algorithms.fedavg import build_fedavg
from tff_kd.algorithms.fedntd import build_fedntd
