"""Federated learning algorithms, each a `build_*` returning its process."""

from tff_kd.algorithms.dsfl import build_dsfl
from tff_kd.algorithms.fd import build_fd
from tff_kd.algorithms.fedad import build_fedad
from tff_kd.algorithms.fedavg import build_fedavg
from tff_kd.algorithms.feddf import build_fedaux
from tff_kd.algorithms.feddf import build_feddf
from tff_kd.algorithms.fedgen import build_fedgen
from tff_kd.algorithms.fedgkd import build_fedgkd
from tff_kd.algorithms.fedntd import build_fedntd
from tff_kd.algorithms.fedssd import build_fedssd
