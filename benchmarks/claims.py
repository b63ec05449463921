r"""The papers' headline claims, tested offline by one rule: docs/CLAIMS.md.

  python -m benchmarks.claims --runs_dir=DIR --jobs=2   # runs, then the page
  python -m benchmarks.claims                                  # the page alone

With --runs_dir, every run a claim needs that the store
(docs/claims/curves.csv) does not hold yet is made with `binaries.train
--resume` under DIR, --jobs at a time, and each finished run's curves are
appended to the store: per evaluated round the test and validation accuracy
of the model a claim is about and the MB communicated so far, with the commit
that ran it. The page is then written from the store alone, so it can be
regenerated without rerunning anything.

One rule for every claim: the difference the claim is about, A - B, is taken
per seed (a seed fixes the split, the initialization and the client sampling
of both runs, so the runs are paired), and the claim holds when the 95%
t-interval of its mean over the seeds lies on the claim's side of zero. The
accuracy compared is the *selected* one: the test accuracy of the round whose
validation accuracy is the best (`tff_kd.experiment.selected_accuracy`); the
final round's difference is printed beside it.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import os

from absl import app
from absl import flags
import numpy as np

from benchmarks import runs as stored_runs
from benchmarks.runs import final, interval, points, read_store, selected
from tasks import data

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)

def _define_flags():
  """The flags, defined when run as a program (importing defines none)."""
  flags.DEFINE_string(
      'runs_dir', None, 'Where the runs go (resumable); unset: write the '
      'page from the store alone.')
  flags.DEFINE_integer('jobs', 1, 'Runs at a time.')
  flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Seeds.')
  flags.DEFINE_list(
      'only', [], 'Run only these settings or variants (all when empty).')
  flags.DEFINE_string(
      'store', os.path.join(_REPO, 'docs', 'claims', 'curves.csv'),
      'The stored curves.')
  flags.DEFINE_string(
      'page', os.path.join(_REPO, 'docs', 'CLAIMS.md'), 'The page written.')


ROUNDS = 100
# The offline settings: MNIST-1D (40-d signals, 10 classes; 4,000 training
# signals over 20 clients), the papers' partitions transposed, and public or
# auxiliary inputs for the distillation algorithms (--distill_data): the
# first PUBLIC_SIZE training signals of `mnist1d_85k`, a second MNIST-1D draw
# (seed 0) that the clients never see, written to ROOT/PUBLIC_FILE.
PUBLIC_SIZE = 5_000
PUBLIC_FILE = 'public_mnist1d_85k_5k.npz'
COMMON = dict(task='mnist1d', num_clients=20, clients_per_round=10,
              rounds=ROUNDS, rounds_per_eval=1, rounds_per_checkpoint=10)
SETTINGS = {
    'label_skew': dict(COMMON, partition='dirichlet', alpha=0.1),
    'shards': dict(COMMON, partition='shards', classes_per_client=2),
    'iid': dict(COMMON, partition='iid'),
    # Where the faithful FedGen lost to the one before its fidelity fixes
    # (docs/FIDELITY.md): Dirichlet 0.05, 30 rounds.
    'fedgen_ablation': dict(COMMON, partition='dirichlet', alpha=0.05,
                            rounds=30),
}
SETTING_TEXT = {
    'label_skew': 'Dirichlet alpha = 0.1 label skew (FedGen\'s MNIST setting'
                  ': 20 users, 10 per round; FedDF\'s and FedGKD\'s alpha)',
    'shards': 'two classes per client (FedNTD\'s and DS-FL\'s shards, FD\'s '
              'non-IID devices)',
    'iid': 'IID: every client holds every label (FD\'s IID devices)',
    'fedgen_ablation': 'Dirichlet alpha = 0.05, 30 rounds (the setting of '
                       'docs/FIDELITY.md\'s before-and-after table)',
}
_DISTILLATION = ('feddf', 'fedaux', 'dsfl', 'fedad')
# FedGen's five fidelity fixes, each undone by one flag: name -> (flag, the
# behaviour before the fix).
FEDGEN_UNDONE = {
    'batch_statistics': ('fedgen_client_batchnorm', 'batch'),
    'normal_noise': ('fedgen_noise', 'normal'),
    'shared_draws': ('fedgen_client_draws', 'shared'),
    'label_distribution': ('fedgen_sampled_labels', 'label_distribution'),
    'unsmoothed_counts': ('fedgen_smooth_counts', False),
}
FEDGEN_FIX_TEXT = {
    'batch_statistics': 'the clients\' G with each batch\'s BatchNorm '
                        'statistics (fix: the running ones)',
    'normal_noise': 'normal noise (fix: uniform, the official code)',
    'shared_draws': 'every client of a round draws the same noise and '
                    'labels (fix: its own)',
    'label_distribution': 'y_hat from the last round\'s label distribution '
                          '(fix: uniform over the classes)',
    'unsmoothed_counts': 'label counts without the +1 smoothing',
}

# Variant: (algorithm, its flags beyond the setting's), cheapest first (the
# order the runs are made in).
VARIANTS = {
    'fedavg': ('fedavg', {}),
    'fedgkd': ('fedgkd', {}),
    'fedntd': ('fedntd', {}),
    'fedssd': ('fedssd', {}),
    'fedgen': ('fedgen', {}),
    'dsfl': ('dsfl', {}),
    'feddf': ('feddf', {}),
    'fedaux': ('fedaux', {}),
    'fd': ('fd', {}),
    'fd_alone': ('fd', {'fd_beta': 0.0}),
    # The references' own settings where ours differ (docs/FIDELITY.md).
    'fedntd_reference': ('fedntd', {  # config/fedntd.json
        'client_learning_rate': 0.01, 'client_sgd_momentum': 0.9,
        'client_weight_decay': 1e-5, 'client_learning_rate_decay': 0.99}),
    'fedgkd_reference': ('fedgkd', {  # README's FedGKD command
        'client_learning_rate': 0.05, 'client_sgd_momentum': 0.9,
        'client_weight_decay': 1e-5}),
    'fedgen_reference': ('fedgen', {  # README: lr 0.01, ExponentialLR 0.99
        'client_learning_rate': 0.01, 'client_learning_rate_decay': 0.99,
        'fedgen_alpha': 10.0, 'fedgen_beta': 10.0}),
    'fedgen_official_loss': ('fedgen', {'fedgen_teacher_loss': 'official'}),
    # FedGen with one of its fidelity fixes undone (the behaviour before
    # them), and with all five undone.
    **{f'fedgen_{name}': ('fedgen', {flag: value})
       for name, (flag, value) in FEDGEN_UNDONE.items()},
    'fedgen_all_undone': ('fedgen', dict(FEDGEN_UNDONE.values())),
    'dsfl_like_clients': ('dsfl', {'dsfl_server_distillation': 'clients'}),
    'fedgen_latent32': ('fedgen', {'model': 'cnn_latent32'}),
    'fedavg_latent32': ('fedavg', {'model': 'cnn_latent32'}),
    'fd_beta_10': ('fd', {'fd_beta': 10.0}),
    'fd_tau_4': ('fd', {'fd_temperature': 4.0}),
}


@dataclasses.dataclass(frozen=True)
class Claim:
  paper: str
  claim: str
  reference: str  # Its figure, with the protocol that produced it.
  setting: str
  a: str  # Variants: the claim is A > B.
  b: str
  at_communication: bool = False  # B taken at A's total MB communicated.


CLAIMS = (
    Claim('FedGen', 'above FedAvg under label skew',
          'MNIST, Dirichlet 0.1, 20 users, 200 rounds: 95.68 +- 0.20 vs '
          '90.71 +- 1.17 (mean over 3 seeds of each seed\'s top-5 test '
          'rounds, the repository\'s plot_utils.py)',
          'label_skew', 'fedgen', 'fedavg'),
    Claim('FedDF', 'above FedAvg',
          'CIFAR-10, ResNet-8, Dirichlet 1 and 0.1, 100 rounds, '
          'distilled on CIFAR-100 or STL-10 inputs (figures not quoted: '
          'their protocol was not checked)',
          'label_skew', 'feddf', 'fedavg'),
    Claim('FedAUX', 'above FedDF',
          'CIFAR-10 with auxiliary CIFAR-100 or STL-10, Dirichlet 0.01, '
          'SimCLR-pretrained backbone (figures not quoted: protocol not '
          'checked)',
          'label_skew', 'fedaux', 'feddf'),
    Claim('FedGKD', 'above FedAvg', 'CIFAR-10 and CIFAR-100 under '
          'Dirichlet label skew (figures not quoted: protocol not checked)',
          'label_skew', 'fedgkd', 'fedavg'),
    Claim('FedNTD', 'above FedAvg under label skew',
          'CIFAR-10, Dirichlet label skew, 100 clients, 10% per round '
          '(figures not quoted: protocol not checked)', 'label_skew',
          'fedntd', 'fedavg'),
    Claim('FedNTD', 'above FedAvg with two classes per client',
          'CIFAR-10, 2 shards per client (figures not quoted: protocol '
          'not checked)',
          'shards', 'fedntd', 'fedavg'),
    Claim('FedNTD', 'above distillation on every class (not-true classes '
          'only)', 'its ablation against KD on all classes',
          'shards', 'fedntd', 'fedgkd'),
    Claim('FedSSD', 'above FedAvg', 'non-IID label skew (its paper could '
          'not be read offline: abstract only)', 'label_skew', 'fedssd',
          'fedavg'),
    Claim('FedSSD', 'above plain self-distillation (FedGKD)',
          'above the self-distillation regularizers (abstract)',
          'label_skew', 'fedssd', 'fedgkd'),
    Claim('FedSSD', 'above not-true distillation (FedNTD)',
          'above the self-distillation regularizers (abstract)',
          'label_skew', 'fedssd', 'fedntd'),
    Claim('DS-FL', 'above FedAvg at the same communication',
          'MNIST, 2 labels per client, open unlabeled data: comparable '
          'accuracy at up to 99% less communication', 'shards', 'dsfl',
          'fedavg', at_communication=True),
    Claim('FD', 'above its clients trained alone (beta = 0)',
          'MNIST, non-IID devices: FD\'s clients above standalone '
          'training',
          'shards', 'fd', 'fd_alone'),
    Claim('FD', 'above its clients trained alone, IID',
          'MNIST, IID devices', 'iid', 'fd', 'fd_alone'),
)
# Settings against each other, read by the same rule: the references' own
# where ours differ (A: the reference's, B: ours; FedGen on the reference's
# model also against FedAvg on it), and FD's weight and temperature (A)
# against the paper's (B).
VARIATIONS = (
    Claim('FedNTD', 'its client optimizer (lr 0.01, momentum 0.9, weight '
          'decay 1e-5, lr x0.99 per round) against ours (SGD lr 0.1)',
          'config/fedntd.json', 'shards', 'fedntd_reference', 'fedntd'),
    Claim('FedGKD', 'its client optimizer (lr 0.05, momentum 0.9, weight '
          'decay 1e-5) against ours (SGD lr 0.1)', 'README command',
          'label_skew', 'fedgkd_reference', 'fedgkd'),
    Claim('FedGen', 'its client settings (lr 0.01 x0.99 per round, alpha = '
          'beta = 10) against ours (lr 0.1, alpha = beta = 1)',
          'README and serverpFedGen.py', 'label_skew', 'fedgen_reference',
          'fedgen'),
    Claim('FedGen', 'the official teacher loss (mean weight x mean CE) '
          'against the paper\'s per-sample weighting', 'serverpFedGen.py',
          'label_skew', 'fedgen_official_loss', 'fedgen'),
    Claim('DS-FL', 'its server model distilled as its clients distill (SGD '
          '0.1, 5 epochs of batches of 100) against our server loop (Adam '
          '1e-3, cosine, 200 steps)', 'SCARLET\'s dsfl.py', 'shards',
          'dsfl_like_clients', 'dsfl'),
    Claim('FedGen', 'the official MNIST model\'s linear 32-d latent before '
          'the head (the generator\'s output) against our 128-d features',
          'trainmodel/models.py', 'label_skew', 'fedgen_latent32', 'fedgen'),
    Claim('FedGen', 'above FedAvg, both with the 32-d latent', '-',
          'label_skew', 'fedgen_latent32', 'fedavg_latent32'),
    Claim('FD', 'distillation weight 10 against the paper\'s 1', '-',
          'shards', 'fd_beta_10', 'fd'),
    Claim('FD', 'temperature 4 against the paper\'s 1 (softer per-label '
          'outputs)', '-', 'shards', 'fd_tau_4', 'fd'),
    Claim('FD', 'temperature 4 against the paper\'s 1, IID', '-', 'iid',
          'fd_tau_4', 'fd'),
)
# FedGen's fidelity fixes one at a time: the behaviour before a fix (A)
# against today's FedGen (B); "holds": the fix costs accuracy here.
ABLATION = tuple(
    Claim('FedGen', FEDGEN_FIX_TEXT[name], '-', 'fedgen_ablation',
          f'fedgen_{name}', 'fedgen') for name in FEDGEN_UNDONE) + (
    Claim('FedGen', 'all five undone', '-', 'fedgen_ablation',
          'fedgen_all_undone', 'fedgen'),
    Claim('FedGen', 'above FedAvg (today\'s FedGen)', '-', 'fedgen_ablation',
          'fedgen', 'fedavg'),
    Claim('FedGen', 'above FedAvg with all five fixes undone', '-',
          'fedgen_ablation', 'fedgen_all_undone', 'fedavg'),
)

FIELDS = ('setting', 'variant', 'seed', 'round', 'test_accuracy',
          'validation_accuracy', 'mb', 'commit')



def run_flags(setting: str, variant: str, seed: int, root: str) -> list[str]:
  """The `binaries.train` flags of one run."""
  algorithm, extra = VARIANTS[variant]
  values = dict(SETTINGS[setting], algorithm=algorithm, seed=seed, **extra)
  if algorithm in _DISTILLATION:
    values['distill_data'] = f'npz:{os.path.join(root, PUBLIC_FILE)}'
  return [f'--{k}={v}' for k, v in sorted(values.items())]


def write_public(root: str) -> None:
  """ROOT/PUBLIC_FILE: the distillation algorithms' public inputs."""
  path = os.path.join(root, PUBLIC_FILE)
  if os.path.exists(path):
    return
  arrays = data.load_arrays('mnist1d_85k')
  np.savez(path + '.tmp.npz', x_train=arrays.x_train[:PUBLIC_SIZE],
           y_train=arrays.y_train[:PUBLIC_SIZE], x_test=arrays.x_test,
           y_test=arrays.y_test)
  os.replace(path + '.tmp.npz', path)


def run_missing(root: str, seeds: Sequence[int], only: Sequence[str],
                store: str, jobs: int) -> None:
  """Makes the runs the claims need that the store lacks; stores each."""
  needed = sorted(
      {(c.setting, v, s) for c in CLAIMS + VARIATIONS + ABLATION
       for v in (c.a, c.b) for s in seeds
       if not only or c.setting in only or v in only},
      key=lambda k: (list(VARIANTS).index(k[1]), k[2], k[0]))
  stored_runs.run_missing({key: run_flags(*key, root) for key in needed}, root,
                          store, FIELDS, jobs, prepare=write_public)


def claim_row(claim: Claim, runs: Mapping) -> str:
  seeds = sorted({s for (st, v, s) in runs if st == claim.setting
                  and v == claim.a}
                 & {s for (st, v, s) in runs if st == claim.setting
                    and v == claim.b})
  if len(seeds) < 2:
    return (f'| {claim.paper} | {claim.claim} | {claim.reference} | '
            f'{claim.setting} | {claim.a} vs {claim.b}: runs missing '
            f'({len(seeds)} paired seeds) | | | not measured |')
  a_runs = [runs[claim.setting, claim.a, s] for s in seeds]
  b_runs = [runs[claim.setting, claim.b, s] for s in seeds]
  a = [selected(r) for r in a_runs]
  if claim.at_communication:
    budgets = [max(float(x['mb']) for x in r) for r in a_runs]
    b = [selected(r, mb) for r, mb in zip(b_runs, budgets)]
    b_final = [final([x for x in r if float(x['mb']) <= mb] or r[:1])
               for r, mb in zip(b_runs, budgets)]
    what = f' (B at A\'s {np.mean(budgets):.1f} MB)'
  else:
    b = [selected(r) for r in b_runs]
    b_final = [final(r) for r in b_runs]
    what = ''
  mean, low, high = interval(np.subtract(a, b))
  f_mean, f_low, f_high = interval(
      np.subtract([final(r) for r in a_runs], b_final))
  verdict = ('holds' if low > 0 else
             'does not hold (the opposite holds)' if high < 0 else
             'does not hold')
  return (f'| {claim.paper} | {claim.claim} | {claim.reference} | '
          f'{claim.setting} | {claim.a} {np.mean(a):.3f} vs {claim.b} '
          f'{np.mean(b):.3f}{what}, {len(seeds)} seeds | '
          f'{points(mean)} [{points(low)}, {points(high)}] | '
          f'{points(f_mean)} [{points(f_low)}, {points(f_high)}] | {verdict} |')


def setting_table(setting: str, runs: Mapping) -> str:
  lines = ['| variant | runs | final test accuracy | selected | MB |',
           '|---|---|---|---|---|']
  for variant in VARIANTS:
    seeds = sorted(s for (st, v, s) in runs if st == setting and v == variant)
    if not seeds:
      continue
    rs = [runs[setting, variant, s] for s in seeds]
    fin = np.array([final(r) for r in rs])
    sel = np.array([selected(r) for r in rs])
    mb = np.mean([max(float(x['mb']) for x in r) for r in rs])
    lines.append(f'| {variant} | {len(seeds)} | {fin.mean():.3f} +- '
                 f'{fin.std():.3f} | {sel.mean():.3f} +- {sel.std():.3f} | '
                 f'{mb:.1f} |')
  return '\n'.join(lines)


def write_page(store: str, page: str) -> None:
  runs = read_store(store)
  commits = sorted({r['commit'] for rows in runs.values() for r in rows})
  flags_of = {s: ' '.join(f'--{k}={v}' for k, v in sorted(values.items()))
              for s, values in SETTINGS.items()}
  lines = [
      '# The papers\' claims, tested offline',
      '',
      'Generated by `python -m benchmarks.claims` from the stored curves '
      '(docs/claims/curves.csv); the runs were made by `python -m '
      'benchmarks.claims --runs_dir=DIR --jobs=2` at commit(s) '
      f'{", ".join(commits) or "none"}, each a `binaries.train` run with the '
      'flags below (the algorithm\'s own settings at their defaults; '
      f'`--distill_data=npz:DIR/{PUBLIC_FILE}` (the first '
      f'{PUBLIC_SIZE:,} training signals of `mnist1d_85k`, a second '
      'MNIST-1D draw the clients never see) for the distillation '
      'algorithms).',
      '',
      '**Rule, for every row.** The difference the claim is about, A - B, '
      'per seed (paired: a seed fixes the split, the initialization and the '
      'client sampling of both), in accuracy points; the claim **holds** '
      'when the 95% t-interval of its mean over the seeds lies above zero. '
      'The accuracy is the *selected* one: the test accuracy of the round '
      'with the best accuracy on the labelled validation split (never the '
      'maximum over test rounds). The final round\'s difference is given '
      'beside it. The references\' figures are quoted with their own '
      'protocols and settings, which differ from ours: they say what the '
      'paper claims, not what we should reproduce.',
      '',
      '| paper | claim | reference figure (its protocol) | setting | ours '
      '(selected) | A - B selected [95% CI] | A - B final [95% CI] | '
      'verdict |',
      '|---|---|---|---|---|---|---|---|',
  ] + [claim_row(c, runs) for c in CLAIMS] + [
      '',
      '## Settings against each other',
      '',
      'By the same rule. Where our defaults differ from a reference\'s code '
      '(docs/FIDELITY.md), the reference\'s setting (A) against ours (B): '
      '"holds" means the reference\'s setting is better here, "the opposite '
      'holds" that ours is; FedGen on the reference\'s model is also '
      'compared with FedAvg on it. For FD, other distillation weights and '
      'temperatures (A) against the paper\'s (B).',
      '',
      '| algorithm | A against B | reference | setting | ours (selected) | '
      'A - B selected [95% CI] | A - B final [95% CI] | verdict |',
      '|---|---|---|---|---|---|---|---|',
  ] + [claim_row(c, runs) for c in VARIATIONS] + [
      '',
      '## FedGen\'s fidelity fixes, one at a time',
      '',
      'By the same rule, in the setting where the faithful FedGen fell '
      'below the one before its five fidelity fixes (fedgen_ablation, '
      'below): each fix undone by its flag (A) against today\'s FedGen (B). '
      '"Holds" means the behaviour before the fix is better here, that is '
      'the fix costs accuracy; "the opposite holds" that it gains. The '
      'per-round reshuffling of the clients\' data, changed in the same '
      'commit for every algorithm, is not a switch and is in both.',
      '',
      '| algorithm | A against B | reference | setting | ours (selected) | '
      'A - B selected [95% CI] | A - B final [95% CI] | verdict |',
      '|---|---|---|---|---|---|---|---|',
  ] + [claim_row(c, runs) for c in ABLATION] + ['', '## Settings', '']
  for setting in SETTINGS:
    lines += [f'### {setting}', '',
              f'{SETTING_TEXT[setting]}: `{flags_of[setting]}`, every other '
              'flag at its default.', '', setting_table(setting, runs), '']
  lines += ['## Variants', '',
            'Each variant is `binaries.train` with these flags beside its '
            'setting\'s.', '', '| variant | flags |', '|---|---|']
  for variant, (algorithm, extra) in VARIANTS.items():
    flags_given = ' '.join(f'--{k}={v}' for k, v in sorted(extra.items()))
    lines.append(f'| {variant} | `--algorithm={algorithm}`'
                 + (f' `{flags_given}`' if flags_given else '') + ' |')
  lines.append('')
  os.makedirs(os.path.dirname(page), exist_ok=True)
  with open(page, 'w') as f:
    f.write('\n'.join(lines))
  print(f'Wrote {page}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  values = flags.FLAGS
  unknown = sorted(set(values.only) - set(SETTINGS) - set(VARIANTS))
  if unknown:
    raise app.UsageError(f'--only names unknown settings or variants '
                         f'{unknown}; choose from {sorted(SETTINGS)} and '
                         f'{sorted(VARIANTS)}.')
  if values.jobs < 1:
    raise app.UsageError(f'--jobs must be >= 1; got {values.jobs}.')
  if values.runs_dir:
    run_missing(values.runs_dir, [int(s) for s in values.seeds],
                values.only, values.store, values.jobs)
  write_page(values.store, values.page)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
