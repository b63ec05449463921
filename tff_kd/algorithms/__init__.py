"""Federated learning algorithms, each a `build_*` returning a LearningProcess."""

from tff_kd.algorithms.fedavg import build_fedavg
from tff_kd.algorithms.feddf import build_fedaux
from tff_kd.algorithms.feddf import build_feddf
from tff_kd.algorithms.fedgen import build_fedgen
from tff_kd.algorithms.fedgkd import build_fedgkd
from tff_kd.algorithms.fedntd import build_fedntd
from tff_kd.algorithms.fedssd import build_fedssd
