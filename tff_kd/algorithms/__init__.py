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
from tff_kd.algorithms import dsfl
from tff_kd.algorithms import fd
from tff_kd.algorithms import fedad
from tff_kd.algorithms import fedavg
from tff_kd.algorithms import feddf
from tff_kd.algorithms import fedgen
from tff_kd.algorithms import fedgkd
from tff_kd.algorithms import fedntd
from tff_kd.algorithms import fedssd

# Every algorithm's `spec.Spec`, in the order the binaries list them.
SPECS = (fedavg.SPEC, fedntd.SPEC, fedgkd.SPEC, fedssd.SPEC, fedgen.SPEC,
         feddf.SPEC, feddf.FEDAUX_SPEC, fd.SPEC, dsfl.SPEC, fedad.SPEC)
