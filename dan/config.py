"""Experiment configuration: YAML files loaded into dataclasses.

One YAML file per experiment lives in ``configs/``. A file only names what differs from the
defaults below; unknown keys are errors (a typo must not silently fall back to a default). Every
command-line flag overrides the file, and the resolved configuration is written to the run folder
as ``config.yaml`` so that a run can be repeated from its folder alone.

:meth:`Config.resolve` is that resolution: for a kind of run (``train``, ``search``, ``retrain``,
``tune``) it returns a new config with every default that kind derives filled in and every field
checked, before any data or model is built. Nothing fills defaults later by changing a config in
place, so the config a run writes is the config it runs and the one a resume compares.

>>> cfg = Config.from_dict({"data": {"dataset": "synthetic"}, "train": {"epochs": 2}})
>>> cfg.train.epochs, cfg.adjoint.alpha
(2, 4.0)
>>> s = cfg.resolve("search")
>>> s.data.holdout, s.search.arch_batch_size, s.data.holdout_batch_size, cfg.data.holdout
(0.3333333333333333, 64, 64, 0.0)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from dan.errors import UserError, setting, spelt
# the YAML loader of configs, tuning files and --set values (re-exported: dan.loop, dan.tune read them here)
from dan.yaml_data import MAX_YAML_BYTES, load_yaml_file, load_yaml_text  # noqa: F401


@dataclass
class ModelConfig:
    space: str = "resnet18_small"  # search space, torchvision.<name>, timm.<name> or package.module:function
    args: dict = field(default_factory=dict)  # keyword arguments of the space's builder
    arch: Optional[str] = None  # arch.json: train ITS small network as the base network


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"  # fashion_mnist, cifar10, cifar100, imagefolder, synthetic or pkg.module:function
    args: dict = field(default_factory=dict)  # keyword arguments of your package.module:function dataset
    # your own dataset's dict items (Hugging Face datasets): [image key, label key]; unset, the
    # image is "image", "img" or "pixel_values" and the label "label" or "labels", whichever one is there
    item_keys: Optional[list] = None
    data: Optional[str] = None  # folder with the files; each dataset has a default
    batch_size: int = 128
    eval_batch_size: Optional[int] = None  # defaults to 2 x batch_size
    workers: int = 0  # data-loader processes for image folders and your own datasets (in-memory sets need none)
    augment: bool = True  # the paper's appendix-B augmentations on the training split
    download: bool = False  # torchvision datasets: download when missing (needs the network)
    image_size: Optional[int] = None  # side of the square input (other sets: batches resized to it)
    channels: Optional[int] = None  # 3: grey images repeated (torchvision, timm models); 1: colour made grey
    num_classes: Optional[int] = None  # synthetic: number of classes
    synthetic_size: int = 512  # synthetic: number of training images (test: a quarter)
    train_subset: Optional[int] = None  # use only the first N training images (seeded choice)
    holdout: float = 0.0  # fraction of the training split held out (architecture search)
    holdout_batch_size: Optional[int] = None  # batches of the held-out split (default batch_size)
    # image folders: larger images are refused before they are decoded (Pillow's guard against
    # decompression bombs, 2 x its MAX_IMAGE_PIXELS); raise it for satellite or pathology images
    max_image_pixels: int = 178_956_970


@dataclass
class AdjointConfig:
    alpha: float = 4.0  # the small network keeps 1/alpha of every masked width
    beta: float = 0.0  # fraction of the small network's kept weights zeroed by r_beta
    schedule: str = "quadratic"  # lambda(t): quadratic | cos | linear | exp | constant
    c: float = 1.0  # scale of lambda(t)
    detach_teacher: bool = False  # stop the KL gradient from reaching the big network
    stem: int = 1  # number of leading convs shared by both networks (not adjoint)
    unmasked: list = field(default_factory=list)  # module-name prefixes whose widths stay full
    mask_seed: int = 0  # seed of the r_beta masks
    arch: Optional[str] = None  # arch.json: the small path takes its widths (DAN retrain)


@dataclass
class TrainConfig:
    method: str = "adjoint"
    epochs: int = 10
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    min_lr: float = 0.0  # floor of the cosine schedule
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    warmup_epochs: float = 1.0  # linear warm-up before the cosine decay
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None
    limit_batches: Optional[int] = None  # at most N batches per epoch and per evaluation
    eval_every: int = 1
    eval_split: str = "test"  # test | holdout (a held-out part of the training split: tuning)
    log_every: int = 20  # steps between TensorBoard scalar writes
    latency_batches: tuple = (1, 64)  # batch sizes of the final latency measurement
    # NHWC activations: measured faster on this CPU for both kinds of step (adjoint/standard
    # 1.40 -> 1.24 for a small-image ResNet-18, docs/benchmarks.md) and standard on GPUs.
    channels_last: bool = True
    # GPU speed paths, used on CUDA only (CPU runs are unchanged): mixed precision (auto = bf16
    # where the GPU supports it, else fp16 with a gradient scaler; off) and an opt-in torch.compile.
    amp: str = "auto"
    compile: bool = False
    # weight inheritance: a checkpoint whose model weights start this run (on a fresh start), each
    # tensor cut to this network's shape (leading channels), e.g. the search's supernet
    # (runs/<search>/checkpoints/last.pt) for a retrain of any widths; None: trained from scratch
    init_from: Optional[str] = None
    # the memory format the deployable files (small.pt, small.pt2) store their weights in:
    # channels_last | contiguous (NCHW); None: channels-last, unless the arch.json being retrained
    # was searched under a latency budget, whose measurement found NCHW faster for its network
    deploy_memory_format: Optional[str] = None


# Where a retrain's weights start (tools/retrain.py --init): "scratch" (random weights, the paper's
# recipe), "supernet" (the search's trained supernet, <search>/checkpoints/last.pt, cut to the found
# widths: weight inheritance, as OFA and BigNAS deploy their supernets' weights) or "auto" (the
# default: the supernet when its checkpoint is beside arch.json, else scratch). docs/search-history.md
# measured the choice: started from the supernet, each method retrained 1.4-2.6 points better
# in the same epochs.
RETRAIN_INITS = ("auto", "scratch", "supernet")
DEFAULT_RETRAIN_INIT = "auto"


@dataclass
class SearchConfig:
    """DAN width search (dan/search.py explains each knob)."""

    budget_flops: Any = None  # "1.6G", "500M", 1.6e9 or "25%" of the widest small network
    budget_params: Any = None  # "1.8M" or "40%"
    budget_latency: Any = None  # "2.5ms" or "40%" of the widest small network's latency here (dan/latency.py)
    latency_batch: int = 1  # the batch size a latency budget is for
    latency_runtime: str = "torch"  # the runtime it is measured in: torch (eager) or onnxruntime
    # intra-op threads it is measured with: one, as when a server runs one request per core (at
    # batch 1 a second thread mostly adds synchronization; more threads narrow the reachable range)
    latency_threads: int = 1
    band: float = 0.03  # the discretized network must land within ±band of the budget
    fractions: Optional[list] = None  # candidate width fractions (default: the space's)
    # Leading convs shared and unsearched. 0 (search the stem's width too) by default: with the
    # stem's width fixed, the narrowest ImageNet-stem ResNet-18 costs 11% of the widest, so a 10%
    # FLOPs budget would be infeasible; searching it brings every space below 4%.
    stem: int = 0
    warmup_epochs: float = 1.0  # weight-only epochs before architecture steps start
    # Gumbel-softmax temperature. "step" (default): tau falls exponentially, step by step, from tau0
    # at the first architecture step to tau_min at the last (TAS anneals 10 -> 0.1; a low final tau
    # lets the distributions commit). "epoch": tau = max(tau_min, tau0 · tau_decay^k) after k
    # architecture epochs (the first design: with 2-3 architecture epochs tau stayed >= 1.25 and
    # the distributions ended near uniform, issue 9).
    tau_anneal: str = "step"
    tau0: float = 5.0
    tau_decay: float = 0.7  # "epoch" annealing only
    tau_min: float = 0.1
    arch_lr: float = 0.05  # Adam on the architecture logits (0.01 left them near uniform in 3 epochs)
    arch_weight_decay: float = 0.0
    arch_samples: int = 2  # candidates mixed per group in an architecture step (0: all)
    # Architecture steps use batches of this size (default: half the weight batch) from the
    # held-out split. A few logits per group need less data per step than the weights, and it
    # keeps one search step under 2x a standard step (docs/benchmarks.md).
    arch_batch_size: Optional[int] = None
    # Which images an architecture step scores widths on: "holdout" (default) a held-out batch the
    # weights never train on (bilevel, as TAS, FBNet); "train" the first arch_batch_size images of
    # the weight step's own batch (single-level; the held-out third still stays out of the weights).
    arch_data: str = "holdout"
    arch_lambda: str = "full"  # weight of KL in the architecture loss: full (= c) | schedule
    # What the architecture minimises besides the cost: "ce+kl" (default) the small network's
    # cross-entropy on the held-out labels plus c·KL(p‖q); "kl" the KL alone (the first design).
    arch_objective: str = "ce+kl"
    # The quantity the Lagrange multiplier watches: "expected" (default) E[cost] under the
    # distribution, smooth in θ, driven to the middle of [B(1-band), B]; "blend" E[cost] blended
    # into the argmax network's cost by the mean largest probability w, (1-w)·E + w·argmax, driven
    # to B (the argmax ends below E[cost], so watching E alone left it under the band in 2 of 3
    # seeds at 10 %); "argmax" the argmax network's cost with a dead band (the first design: it
    # jumps by whole candidates, so mu oscillated and the argmax ended outside the band, issue 9).
    budget_control: str = "expected"
    # The last `settle` fraction of the architecture steps ("step" annealing only): tau is held at
    # tau_min (the anneal ends where the settle phase starts) and the multiplier watches the argmax
    # network's cost with a dead band [B(1-band), B(1+band)] instead of E[cost]. Once the
    # distributions have committed, E[cost] is the wrong signal for landing (the leftover mass makes
    # it differ from the argmax cost by 3-17 % of B at 10 % FLOPs) and the multiplier lagged the
    # commitment made at the very end of the anneal. 0 turns the phase off. Half the architecture
    # steps: with 0.3 a 10 % search (seed 2) first reached the band 40 steps before the end, jumped
    # over it and had no time to come back (docs/search-history.md has the runs).
    settle: float = 0.5
    # How fast the multiplier moves in the settle phase, relative to its size: over the whole phase
    # a violation v (argmax cost/B - 1, outside the band) moves mu by about settle_gain·v·|mu|. The
    # integral step of the rest of the search (multiplier_lr) cannot flip a committed group in time:
    # at tau_min a group's cost gradient is scaled by p(1-p), so landing needs mu to move in
    # proportion to itself (seed 1 at 10 %: mu fell 0.16 -> 0.12 and the argmax stayed at 0.938 B).
    settle_gain: float = 20.0
    # Past the vernier's deadline, an argmax outside the band with mu of the sign that pushes it
    # further out (mu < 0 above the band, mu > 0 below) first has mu set to 0, then takes the usual
    # step. Without it mu crosses zero at the settle steps' size while the penalty pushes the wrong
    # way (`make demo`'s search: seed 11 climbed 0.94 -> 1.44 B with mu at -0.08). Off by default:
    # on the demo's search (docs/search-history.md), the 7 of seeds 1-14 that reach the deadline, it
    # landed 4 as the default did (forty-fourth session), and with settle_hold also 4 (forty-fifth:
    # then several fine groups jump over the band together); its misses end nearer the band.
    settle_sign_reset: bool = False
    # Each jump of the argmax over the band halves the settle steps (a bisection on mu); with
    # settle_regrow > 1 a settle step that finds the argmax outside the band on the same side as the
    # last one multiplies them by it again, up to the full size (Rprop's rule), so halvings do not
    # freeze mu. 1.0 (off, the default so far): in the fifteenth session's suite (docs/search-history.md)
    # two 10 % searches (seeds 1, 2) jumped over the band early in the settle phase and then held
    # mu within 0.01 for ~300 steps with the argmax at 0.94 and 0.83 B, outside the band, to the
    # end. Measured (ablation settle-regrow, 1.1, those two seeds): it unfreezes mu but neither
    # lands (1.039 and 1.134 B: at 10 % one channel of an early group costs more than the band is
    # wide, so a moving mu jumps over it again), so it stays off.
    settle_regrow: float = 1.0
    # When the settle phase stops the architecture steps: "guarded" (default) never, but an
    # architecture step after the first landing that takes the argmax out of the band is undone
    # (logits and Adam moments restored), so the distributions keep committing inside the band;
    # "landed" (the default until the fifteenth session) at the first step the argmax is inside
    # the band; "end" never (the steps go on at tau_min to the last one, the multiplier moving only
    # while the argmax is outside the band). Ablations at 25 % FLOPs (docs/search-history.md, fourteenth
    # session): "landed" lands 0-170 steps after the settle phase starts and skips the rest
    # (~140-310 steps). "end" commits more (mean largest probability 0.75 vs 0.65, seeds 0-2)
    # but the steps after the landing carry the argmax out of the band again (0 of 3 in band:
    # 0.88-1.19 B, repaired); "guarded" lands (5 of 5; at 10 %, 3 of 3) and commits more (0.71 vs
    # 0.63, seeds 0-4; at 10 % 0.76 vs 0.65), often at the band's top edge; neither moves the
    # retrained top-1 (paired +0.03 points each at 25 %, -0.05 at 10 %). "guarded" is the default
    # for that: the same accuracy, more commitment. As the default (fifteenth session, another
    # machine): 25 % 4 of 5 in band, 0.69; 10 % 1 of 3, 0.87 — the two misses never landed at all
    # (settle_regrow below), which guarded does not change.
    settle_until: str = "guarded"
    # A deadline for the landing: if the argmax has not been inside the band by the time this
    # fraction of the settle phase is over, the search lands it itself with repair's move (the
    # fewest groups moved, the most probable landing: dan.supernet.repair), made on the logits by
    # swapping each moved group's new candidate with its old argmax (logits and Adam moments), and
    # the guarded steps go on committing around it for the rest of the phase ("landed": they end
    # there). arch.json's search.settle_snapped names the groups it moved. 1.0 turns it off (the
    # final repair makes the same move, with no architecture step after it). Made because at 10 %
    # one channel of an early group can cost more than the band is wide, and 2 of 3 searches of
    # the fifteenth session never landed (settle_regrow above). Measured (sixteenth session,
    # ablation settle-snap, 0.5) on the four suite searches that had not landed half-way (10 %
    # seeds 1-2, 25 % seeds 3-4; on the others it never acts): it landed all four at the same
    # commitment, two on the very widths repair gave the default (retrained: identical), two on
    # other widths that retrained 0.33 and 0.42 points lower. A landing it makes is repair's
    # move made early, and it did not help the accuracy, so it stays off.
    settle_snap: float = 1.0
    # In the settle phase, the cost penalty reaches only the groups whose one-candidate moves from
    # the argmax each change the cost by less than the band's width (2·band·B), so the multiplier
    # steers the argmax with steps that cannot jump over the band (a vernier); the other groups
    # follow the objective alone. Made because at 10 % FLOPs (and at the 25 % params budget) one
    # candidate of some groups costs more than the band is wide: the multiplier, moving every
    # group at once, flipped such a group across the band, the bisection halved its steps, and it
    # froze outside the band (seventeenth session: 10 % seeds 1-2, params seeds 0-1 never landed).
    # If every group is that coarse, none is excluded. Measured (ablation settle-fine) on every
    # suite search (eighteenth session, 20 searches at four budgets): in band before repair 16 of 20
    # against the default's 15 (params 3 of 3 against 1 of 3, but 25 % FLOPs 5 of 7 against 6 of 7);
    # 12 searches ended on the default's widths (retrained: identical), and 7 of the 8 others
    # retrained lower (mean -0.18 points): with the coarse groups left to the objective, the
    # penalty lands the argmax by narrowing the cheap early groups, which costs accuracy. Repair's
    # one-group move retrains better, so this stays off.
    settle_fine: bool = False
    # settle_fine as a deadline (the vernier): if the argmax has not been inside the band by this
    # fraction of the settle phase, from then on the cost penalty reaches only the fine groups (as
    # settle_fine) and the settle steps restart at full size, so the search's own steps can still
    # land it. A search that lands before the deadline is not changed at all (its logits, and so its
    # widths and retrain, are bit for bit those without it), unlike settle_fine, whose losses came
    # from searches that landed anyway but on other widths; the weights never depend on it (the
    # architecture steps move only the logits and the small path's BatchNorm statistics), so the
    # baselines retrained from a search's supernet stay the same. Made because the 6-epoch search
    # landed only 1 of 3 under the params budget (twenty-first session): after a coarse layer4 group
    # was flipped across the band, the bisection froze the multiplier outside it. Measured
    # (twenty-second session, docs/search-history.md) on the five 6-epoch suite searches not landed by the
    # deadline (every search that landed did so earlier): it landed 1 (params seed 0, 0.941 -> 0.973
    # B), left params seed 1 where it was (committed: mean largest probability 0.955) and moved three
    # to the band's other side or far below it (10 % seeds 1, 5; 50 % seed 1: 1.60 -> 0.46 B),
    # which repair finished; none retrained lower (+0.12, 0, +0.16, +0.08, +1.07 points). The params
    # budget lands 2 of 3 with it (1 of 3 without). The default since; 1.0 turns it off.
    settle_vernier: float = 0.5
    # Past the vernier's deadline (or under settle_fine), hold the groups the penalty does not reach:
    # no architecture step moves their logits. Without it those coarse groups still take the
    # accuracy objective's steps with no cost against them, and widen: `make demo` (thirty-ninth
    # session) crossed its vernier deadline at about 1.1 B and ended at 1.30 B with mu rising; with
    # the hold it landed at 1.022 B. Off by default: on the suite's network no search it was tried on
    # needed it (of 7 seeds whose recorded search never landed past the deadline, 6 landed before it
    # on another CPU and the seventh landed both ways on the same widths; ablation "settle-hold").
    # Measured both ways on the demo's search, seeds 1-8 on one machine (forty-third session,
    # docs/search-history.md): of the 5 that reached the deadline the default landed 4, the hold 3; the
    # held coarse groups are also the counterweight that brings an argmax back up when the penalty
    # overshoots below the band (seed 2: 0.97 landed without, 0.71 and repaired with the hold).
    settle_hold: bool = False
    # When the hold acts: "always" (past the deadline, as above) or "above": only at the steps whose
    # argmax network is above the band, so that held coarse groups cannot widen an argmax that is
    # already too large (seed 0's case) but are free to bring back one the penalty pushed below the
    # band (seed 2's). Measured (forty-fourth session, docs/search-history.md: the demo's search, the 7
    # of seeds 1-14 that reached the deadline): it landed 4, as the default did (seed 4 instead of 2),
    # on the same widths as "always" on every seed both ran, and retrained -0.25 points (se 0.12) on
    # the 3 seeds whose widths differ: opt-in. The misses come from the multiplier's sign (below).
    settle_hold_while: str = "always"
    multiplier_lr: float = 2.0  # Lagrange multiplier change per epoch per unit of relative violation
    # "expected" control only: a proportional term, so the penalty weight is mu + p·(E[cost]/B - target).
    # Off by default: p = 5 held E[cost] at the target but kept the distributions mixed (mean largest
    # probability 0.50 and the argmax at 0.60 B at 10 %, vs 0.98 and 1.00 B without it): pinning
    # E[cost] makes every group's commitment costly. Kept as an ablation (docs/search.md).
    multiplier_p: float = 0.0
    multiplier_max: float = 50.0
    # Widths of a weight step: "uniform" (default) draws every candidate with equal probability
    # (SPOS), so the supernet stays fair to all widths; "distribution" draws them from the
    # architecture distribution (the first design: once it commits, only that architecture's
    # weights are trained and the supernet ranks it above widths it never trained; at 10 % it
    # scored its own widths 83.4 % vs uniform widths' 77.5 % held-out, while retrained from
    # scratch the uniform widths won, 86.5 vs 85.2; with uniform sampling the searched widths
    # retrained to 87.2, seed 0; docs/search-history.md has the seeds). "sandwich" is "uniform" plus, in
    # every weight step, the narrowest small network distilled from the big network's detached
    # logits (BigNAS's sandwich rule; its widest slice is the big network, trained every step
    # anyway): an ablation (docs/search.md).
    weight_sampling: str = "uniform"
    bn_recalibrate_batches: int = 20  # re-estimate small BN statistics before each evaluation
    # The found widths refined at the end by held-out swaps at equal cost (dan/refine.py): at most
    # this many rounds of at most (2 x groups + 8) trial architectures, each scored by the small network's
    # held-out CE on `refine_batches` batches after re-estimating its BatchNorm statistics on
    # `refine_recal_batches` training batches. 0 turns it off.
    refine_rounds: int = 0
    refine_batches: int = 16
    refine_recal_batches: int = 8
    # The found widths' last step by short fine-tunes (dan/shortlist.py): the answer and
    # `shortlist - 1` draws from the final distributions, each fine-tuned from the supernet for
    # `shortlist_steps` batches (the retrain's recipe) and scored on the held-out split; the best is
    # kept. 0 turns it off (one process only: it trains in <run>/shortlist). Off by default: at 25 %
    # FLOPs (docs/search-history.md, five seeds, 6 candidates) it retrained -0.00 on average against the
    # search's own answer; the fine-tune ranks the search's likely widths, but not as retraining does.
    shortlist: int = 0
    shortlist_steps: int = 150


def flatten(d: dict, prefix: str = "") -> dict:
    """A config dict's settings by dotted key (``{"search.tau0": 3.0, ...}``); an empty section is one
    key of its own (``"methods": {}``)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# What a run written by an older DAN computes, for the keys a newer one added or whose default it
# changed (dan.loop.adopt_run_settings): a resume that filled them with today's defaults switched
# on behaviour the run never had (an upgrade audit: an old search resumed with the vernier and the
# guarded settle on, and recorded them as if it had run with them throughout), and one whose saved
# value was a former default was refused ("written with search.multiplier_p=5.0, not 0.0") although
# the user typed the same command. Since the first search redesign (commit 2dcf932).
# A key the saved config lacks: the value that reproduces the code before the key existed.
BEFORE_KEY = {"search.tau_anneal": "epoch", "search.arch_objective": "kl", "search.budget_control": "argmax",
              "search.weight_sampling": "distribution", "search.settle": 0.0, "search.settle_until": "landed",
              "search.settle_vernier": 1.0}
# A key whose default changed: its former defaults (a saved value among them, with today's default
# on the command line, is the run's own, kept).
FORMER_DEFAULTS = {"search.stem": (1,), "search.tau0": (2.0,), "search.tau_min": (0.2,), "search.arch_lr": (0.01,),
                   "search.multiplier_p": (5.0,), "search.weight_sampling": ("distribution",),
                   "search.settle_until": ("landed",), "search.settle_vernier": (1.0,)}
# A saved value this DAN refuses and an older one ran (dan.saved.read_former): key -> (the commit
# that began to refuse it, what the code before it did, the value that does the same today, or None
# for the key dropped, given the saved one; None when the value is not one it refuses). An upgrade
# audit: a 6c13876 search with search.warmup_epochs 0.5 (rounded up then) could be neither
# retrained nor resumed, and a 4b14b54 search with methods.kd.teacher_epochs 0 (train.epochs then)
# could not be retrained, though the retrain reads neither.
FORMER_READINGS = {
    "search.warmup_epochs": ("0e7ee65", "rounded it up to whole epochs",
                             lambda v: math.ceil(v) if isinstance(v, float) and 0 < v < math.inf and v % 1 else v),
    "methods.kd.teacher_epochs": ("68b923c", "read 0 as train.epochs", lambda v: None if v == 0 else v),
    "methods.ksanc.teacher_epochs": ("68b923c", "read 0 as train.epochs", lambda v: None if v == 0 else v),
}


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out: Optional[str] = None  # run folder; defaults to runs/<name>
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adjoint: AdjointConfig = field(default_factory=AdjointConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    # Sections of the comparison methods and of tuning are plain dicts, read by the code that owns
    # them (each validates its own keys).
    methods: dict = field(default_factory=dict)
    tune: dict = field(default_factory=dict)
    # The DAN that wrote this config.yaml (dan.checkpoint.code_version; set by the run that saves it,
    # None in a config a user writes): an upgrade audit's `--config <old run>/config.yaml` ran today's
    # search algorithm in silence, and nothing in the file told a later DAN which one it came from
    # (dan.saved.older_config_notes). It changes nothing a run computes.
    code: Optional[str] = None

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return _build(cls, {} if d is None else d, "")

    @classmethod
    def from_file(cls, path: str, read=None) -> "Config":
        """The config a YAML file holds; ``read``: a function of the file's mapping that gives the one
        to build (the tools' :func:`dan.saved.older_config_notes`: an older DAN's run config read as
        it ran), applied once, to what :func:`read_config_file` read."""
        d = read_config_file(path)
        cfg = cls.from_dict(read(d) if read is not None else d)
        if cfg.name == "run":
            cfg.name = os.path.splitext(os.path.basename(path))[0]
        cfg.source = os.path.abspath(path)  # (not saved) a new run does not write over it: dan.loop.check_run_dir
        return cfg

    def to_dict(self) -> dict:
        d = _plain(dataclasses.asdict(self))
        if d.get("code") is None:  # set in the config.yaml a run writes only (the checkpoint's and
            del d["code"]  # arch.json's copies record their DAN in rng.code and search.code): no null key
        return d

    def set(self, dotted: str, value: Any) -> None:
        """Set ``section.key`` (or a top-level key) from a string or a value, with type checks."""
        parts = dotted.split(".")
        obj = self
        for p in parts[:-1]:
            if isinstance(obj, dict):
                obj = obj.setdefault(p, {})
            elif dataclasses.is_dataclass(obj) and p in {f.name for f in dataclasses.fields(obj)}:
                obj = getattr(obj, p)
            else:
                raise UserError(f"unknown config key '{dotted}': see the dataclasses in dan/config.py")
        key = parts[-1]
        if isinstance(obj, dict):
            obj[key] = load_yaml_text(value, f"the value of {dotted}") if isinstance(value, str) else value
            return
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if key not in fields:
            raise UserError(f"unknown config key '{dotted}': see the dataclasses in dan/config.py")
        hint = typing.get_type_hints(type(obj))[key]
        if isinstance(value, str) and hint is not str:  # an Optional[str] takes the text as typed: off, 2026-12-07
            value = load_yaml_text(value, f"the value of {dotted}", (lambda path: not path) if _is_text(hint) else None)
        setattr(obj, key, _coerce(hint, value, dotted))

    @property
    def run_dir(self) -> str:
        return self.out or os.path.join("runs", self.name)

    def to_yaml(self) -> str:
        """The config as ``config.yaml`` holds it."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_yaml())

    def resolve(self, kind: str) -> "Config":
        """This config as a run of ``kind`` runs it: a new :class:`Config` (``self`` is not changed)
        with the defaults that kind derives filled in and every field checked.

        Args:
            kind: ``"train"``, ``"search"``, ``"retrain"`` (a train run of a found architecture:
                :func:`dan.retrain.retrain_config`) or ``"tune"`` (the base of a study).
        Returns:
            the resolved config. Resolving it again returns an equal config.
        Raises:
            UserError: naming the first bad key and what it accepts.

        ``search`` fills the held-out part of the training split (``data.holdout``: a third when
        0), the architecture batches (``search.arch_batch_size``: ``data.holdout_batch_size`` or
        else half ``data.batch_size`` when unset) and the held-out loader's batches
        (``data.holdout_batch_size``: the architecture batches). ``tune`` fills none of these: each
        trial fills them after its sampled values are set (a tuned batch size changes them). Defaults that need the dataset's files
        (``image_size``, ``num_classes``, ``search.fractions``…) are the data and model builders'.
        """
        if kind not in RUN_KINDS:
            raise ValueError(f"unknown kind of run {kind!r}: one of {', '.join(RUN_KINDS)}")
        cfg = copy.deepcopy(self)
        if kind == "search":
            d = cfg.data
            d.holdout = d.holdout or SEARCH_HOLDOUT
            cfg.search.arch_batch_size = _arch_batch_size(d, cfg.search)
            d.holdout_batch_size = cfg.search.arch_batch_size
        cfg.validate()
        t, d = cfg.train, cfg.data
        warm = math.ceil(cfg.search.warmup_epochs)
        if kind == "search" and warm >= t.epochs:  # the search would end on its uniform start, repaired
            raise UserError(f"search.warmup_epochs {cfg.search.warmup_epochs:g} takes all {t.epochs} epoch(s) of the "
                            f"search: no architecture step would run; give --epochs {warm + 1} or more, or --set "
                            f"search.warmup_epochs=0")
        if kind == "search" and cfg.search.budget_latency is None:
            _refuse_idle_latency_keys(cfg.search, getattr(cfg, "typed", frozenset()))
        if kind in ("train", "retrain") and t.eval_split == "holdout" and not d.holdout:
            raise UserError("train.eval_split=holdout needs data.holdout > 0 (the part of the training "
                            "split it evaluates on)")
        if kind == "retrain" and not {"adjoint": cfg.adjoint.arch, "standard": cfg.model.arch}.get(t.method):
            raise UserError(f"a retrain is train.method adjoint (with adjoint.arch) or standard (with "
                            f"model.arch), got method {t.method!r}: build it with dan.retrain.retrain_config")
        return cfg

    def validate(self) -> "Config":
        """Check every field's range and choice (a :class:`UserError` names the key and what it
        accepts); :meth:`resolve` calls it. Returns the config, unchanged."""
        _paths_to_str(self)  # a pathlib.Path from Python (dan.search(out=Path(...))) failed to save as YAML
        t, d, a, m = self.train, self.data, self.adjoint, self.model
        int_range("seed", self.seed, 0, 2**63 - 1)
        if self.out is None:
            _check_run_name(self.name)
        if self.tune:  # (kept as a section: every saved config.yaml holds it, empty)
            raise UserError(f"config section 'tune' ({', '.join(map(str, self.tune))}) is read by nothing: a study's "
                            f"settings go in a tuning file (tools/tune.py --tune FILE, configs/tune_*.yaml); drop it")
        int_range("train.epochs", t.epochs, 1, 100_000)
        num_range("train.lr", t.lr, 0.0, 1e3, lo_open=True)
        num_range("train.min_lr", t.min_lr, 0.0, 1e3)
        num_range("train.weight_decay", t.weight_decay, 0.0, 10.0)
        num_range("train.momentum", t.momentum, 0.0, 1.0, hi_open=True)
        num_range("train.warmup_epochs", t.warmup_epochs, 0.0, 100_000.0)
        num_range("train.label_smoothing", t.label_smoothing, 0.0, 1.0, hi_open=True)
        if t.grad_clip is not None:
            num_range("train.grad_clip", t.grad_clip, 0.0, 1e9, lo_open=True)
        if t.limit_batches is not None:
            int_range("train.limit_batches", t.limit_batches, 1, 10**9)
        int_range("train.eval_every", t.eval_every, 1, 100_000)
        int_range("train.log_every", t.log_every, 1, 10**9)
        for b in t.latency_batches:
            int_range("train.latency_batches", b, 1, 65536)
        _choice("train.optimizer", t.optimizer, ("adam", "adamw", "sgd"))
        _choice("train.eval_split", t.eval_split, ("test", "holdout"))
        _choice("train.amp", t.amp, ("auto", "bf16", "fp16", "off"))
        if t.deploy_memory_format is not None:
            _choice("train.deploy_memory_format", t.deploy_memory_format, MEMORY_FORMATS)
        int_range("data.batch_size", d.batch_size, 1, 1 << 20)
        if d.eval_batch_size is not None:
            int_range("data.eval_batch_size", d.eval_batch_size, 1, 1 << 20)
        int_range("data.workers", d.workers, 0, 1024)
        if d.args and not (isinstance(d.dataset, str) and ":" in d.dataset):
            raise UserError(f"data.args are the keyword arguments of your own dataset function (data.dataset: "
                            f"package.module:function), and data.dataset is {d.dataset!r}: drop data.args")
        if d.item_keys is not None:
            _item_keys(d)
        if d.image_size is not None:
            int_range("data.image_size", d.image_size, 4, 4096)
        if d.channels not in (None, 1, 3):
            raise UserError(f"data.channels must be 1 or 3 (or left unset), got {d.channels!r}")
        if d.num_classes is not None:
            int_range("data.num_classes", d.num_classes, 2, 1_000_000)
        int_range("data.synthetic_size", d.synthetic_size, 2, 10**8)
        int_range("data.max_image_pixels", d.max_image_pixels, 1, 10**12)
        if d.train_subset is not None:
            int_range("data.train_subset", d.train_subset, 1, 10**9)
        num_range("data.holdout", d.holdout, 0.0, 1.0, hi_open=True)
        num_range("adjoint.alpha", a.alpha, 1.0, 1e6)
        num_range("adjoint.beta", a.beta, 0.0, 1.0, hi_open=True)
        num_range("adjoint.c", a.c, 0.0, 1e6)
        int_range("adjoint.stem", a.stem, 0, 10_000)
        from dan.loss import SCHEDULES

        _choice("adjoint.schedule", a.schedule, SCHEDULES)
        from dan.models import kind

        kind(m.space)  # a model name it can build (its form; nothing is imported)
        for key in ("width", "in_channels", "num_classes"):  # the search spaces' size arguments
            if key in m.args:
                int_range(f"model.args.{key}", m.args[key], 1, 8192)
        s = self.search
        num_range("search.band", s.band, 0.0, 0.5, lo_open=True, hi_open=True)
        if s.fractions is not None:
            for f in s.fractions:
                num_range("search.fractions", f, 0.0, 1.0, lo_open=True)
        if s.arch_batch_size is not None:
            int_range("search.arch_batch_size", s.arch_batch_size, 1, 1 << 20)
        int_range("search.arch_samples", s.arch_samples, 0, 1024)
        int_range("search.bn_recalibrate_batches", s.bn_recalibrate_batches, 0, 10**6)
        num_range("search.tau_decay", s.tau_decay, 0.0, 1.0, lo_open=True)
        num_range("search.arch_weight_decay", s.arch_weight_decay, 0.0, 10.0)
        check_search_config(s)
        return self


# The kinds of run :meth:`Config.resolve` knows.
RUN_KINDS = ("train", "search", "retrain", "tune")
MEMORY_FORMATS = ("channels_last", "contiguous")  # the keys of dan.deploy.MEMORY_FORMATS
# A search holds out a third of the training images for the architecture steps: architecture
# batches are half the size of weight batches, so both parts are used up at the same pace (DARTS
# splits 50/50 with equal batches).
SEARCH_HOLDOUT = 1 / 3

_SEARCH_CHOICES = {"tau_anneal": ("step", "epoch"), "arch_objective": ("ce+kl", "kl"),
                   "budget_control": ("expected", "blend", "argmax"), "arch_lambda": ("full", "schedule"),
                   "weight_sampling": ("distribution", "uniform", "sandwich"), "settle_until": ("landed", "end", "guarded"),
                   "settle_hold_while": ("always", "above"), "arch_data": ("holdout", "train"),
                   "latency_runtime": ("torch", "onnxruntime")}


def _check_run_name(name) -> None:
    """``name`` makes the run's folder ``runs/<name>`` (without ``out``): a folder under runs/, nested
    or not. An audit's ``name: ".."`` made the run folder the current one, and the run wrote its
    config.yaml, summary.json and small.json over the user's files there."""
    parts = name.replace("\\", "/").split("/") if isinstance(name, str) else []
    if not parts or os.path.isabs(name) or any(p in ("", ".", "..") for p in parts):
        raise UserError(f"config key 'name' ({name!r}) names the run's folder under runs/: give a folder name "
                        f"without '..', '.', an empty part or a leading '/', or choose the folder with "
                        f"{spelt('--out', 'out=')}")


def _refuse_idle_latency_keys(s: SearchConfig, typed: frozenset = frozenset()) -> None:
    """A latency measurement setting of a search without a latency budget did nothing (exit 0, not
    a word: an audit's --latency-batch, a user's pass's --set search.latency_batch). The message
    names where the value came from: ``typed`` holds the keys the command's flags and ``--set``
    gave (:func:`dan.cli.common.resolve_config`), any other came with the config (an audit was told
    "drop --latency-runtime" for a YAML's ``search.latency_runtime: onnxruntime``: no flag to drop)."""
    for key, default in (("latency_batch", 1), ("latency_runtime", "torch"), ("latency_threads", 1)):
        value = getattr(s, key)
        if value != default:
            flag = "--" + key.replace("_", "-")
            fix = (f"drop {flag} (or --set search.{key})" if f"search.{key}" in typed else
                   f"remove search.{key} from the config (or {setting(f'search.{key}={default}')})")
            where = f"search.{key} ({flag})" if f"search.{key}" in typed else f"the config's search.{key}: {value}"
            add = spelt("--budget-latency (e.g. 2.5ms or 40%)", "a latency budget (kind=\"latency\", budget=\"2.5ms\")")
            raise UserError(f"{where} sets the latency budget's measurement, and this search has no latency budget: "
                            f"add {add}, or {fix}")


def check_search_config(s: SearchConfig) -> None:
    """The search section's choices and ranges (part of :meth:`Config.validate`)."""
    for key, allowed in _SEARCH_CHOICES.items():
        _choice(f"search.{key}", getattr(s, key), allowed)
    num_range("search.multiplier_p", s.multiplier_p, 0.0, math.inf)
    for key in ("tau0", "tau_min", "arch_lr", "multiplier_lr", "multiplier_max", "settle_gain"):
        num_range(f"search.{key}", getattr(s, key), 0.0, math.inf, lo_open=True)
    num_range("search.settle", s.settle, 0.0, 1.0, hi_open=True)
    num_range("search.settle_regrow", s.settle_regrow, 1.0, math.inf)
    num_range("search.settle_snap", s.settle_snap, 0.0, 1.0)
    num_range("search.settle_vernier", s.settle_vernier, 0.0, 1.0)
    num_range("search.warmup_epochs", s.warmup_epochs, 0.0, math.inf)
    if s.warmup_epochs != math.floor(s.warmup_epochs):  # 0.01, 0.5 and 1 searched alike (rounded up)
        raise UserError(f"search.warmup_epochs counts whole epochs of weight-only training (architecture steps start "
                        f"at an epoch's start), got {s.warmup_epochs:g}: give 0, 1, 2, ...")
    if s.arch_samples == 1:  # one candidate per group: the labels' CE and the KL give the logits no gradient
        raise UserError("search.arch_samples 1 mixes one candidate per group, which gives the architecture "
                        "logits no gradient from the data (the cost penalty alone would steer them): give 2 or "
                        "more, or 0 (all)")
    int_range("search.refine_rounds", s.refine_rounds, 0, 10_000)
    int_range("search.refine_batches", s.refine_batches, 1, 10_000)
    int_range("search.refine_recal_batches", s.refine_recal_batches, 0, 10_000)
    int_range("search.shortlist", s.shortlist, 0, 1_000)
    int_range("search.shortlist_steps", s.shortlist_steps, 1, 10**9)
    if s.shortlist > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # under torchrun
        raise UserError("search.shortlist fine-tunes its candidates in one process: search without torchrun, "
                        "or shortlist a finished search with tools/baseline.py shortlist --supernet ...")


def _arch_batch_size(d: DataConfig, s: SearchConfig) -> int:
    """A search's architecture batch size. In a search the held-out loader serves the architecture
    steps alone, one batch a step (its monitoring uses the evaluation batches), so its batches are
    the architecture batches and ``data.holdout_batch_size`` is another name for
    ``search.arch_batch_size``. The resolve set it to ``arch_batch_size`` (half ``batch_size``),
    and an explicit ``data.holdout_batch_size: 16`` became 64 in the run's config.yaml without a
    word (a config-file audit): a value the user gave is the architecture batch size now, and two
    different values are refused. A resolved config holds them equal, so it resolves to itself
    (and a run folder written before resolves as it did, unless its config named a size that was
    dropped: then the resume names the difference)."""
    h = d.holdout_batch_size
    if h is not None:
        int_range("data.holdout_batch_size", h, 1, 1 << 20)
    if s.arch_batch_size is None:
        return h if h is not None else max(1, d.batch_size // 2)
    if h is not None and h != s.arch_batch_size:
        raise UserError(f"data.holdout_batch_size {h!r} and search.arch_batch_size {s.arch_batch_size!r} differ, and "
                        f"a search's held-out batches are its architecture batches: give one of them (or the same "
                        f"size to both)")
    return s.arch_batch_size


def check_tau_decay(cfg: "Config") -> None:
    """Refuse ``search.tau_decay`` under the default per-step anneal, where it does nothing: set in a
    config file or with ``--set search.tau_decay=`` it was ignored in silence, while the
    ``--tau-decay`` flag was refused (a config-file audit). A key at its default counts as set only
    when typed (``cfg.typed``: dan.cli.common.resolve_config).

    Not part of :meth:`Config.validate` or :meth:`Config.resolve`: a new search checks it
    (:func:`dan.search.checked_search_config`, a tuning study's base when the study is new), and
    nothing else does. A retrain reads its search's config, and a resumed run its own, which a DAN
    without this check may have written with an ignored ``tau_decay`` beside ``tau_anneal: step``
    (or, before ``tau_anneal`` existed, with ``tau_decay`` alone, then annealed per epoch:
    :data:`BEFORE_KEY`): refusing those would make the run impossible to resume or retrain, since
    the resume also requires the saved value back (dan.loop.check_same_config)."""
    s = cfg.search
    typed = "search.tau_decay" in getattr(cfg, "typed", ())
    if s.tau_anneal == "epoch" or (s.tau_decay == SearchConfig.tau_decay and not typed):
        return
    given = setting(f"search.tau_decay={s.tau_decay:g}") if typed else f"search.tau_decay: {s.tau_decay:g} (config)"
    raise UserError(f"{given} decays the temperature per epoch, with search.tau_anneal: epoch "
                    f"({setting('search.tau_anneal=epoch')}); the default anneals per step from search.tau0 to "
                    f"search.tau_min: set those instead, or drop search.tau_decay")


def num_range(key, v, lo, hi, *, lo_open=False, hi_open=False, label: str | None = None) -> None:
    """A finite number (not a bool) in the range, else a :class:`UserError` naming ``label``
    (default "config key '<key>'"; a tuning file names its own settings)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
        (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise UserError(f"{label or f'config key {key!r}'} must be a finite number in {rng}, got {v!r}")


def int_range(key, v, lo, hi, *, label: str | None = None) -> None:
    """An integer (not a bool) in [lo, hi], else a :class:`UserError` naming ``label`` (as :func:`num_range`)."""
    if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
        raise UserError(f"{label or f'config key {key!r}'} must be an integer in [{lo}, {hi}], got {v!r}")


def _item_keys(d: DataConfig) -> None:
    """``data.item_keys``: two different non-empty strings, for your own dataset only."""
    k = d.item_keys
    if not (isinstance(k, list) and len(k) == 2 and all(isinstance(x, str) and x for x in k) and k[0] != k[1]):
        raise UserError(f"data.item_keys must be the two keys of your dataset's dict items, image first "
                        f"(e.g. [img, label]), got {k!r:.80}")
    own = isinstance(d.dataset, str) and (":" in d.dataset or d.dataset.startswith("<object "))
    if not own:
        raise UserError(f"data.item_keys name the keys of your own dataset's dict items (data.dataset: "
                        f"package.module:function), and data.dataset is {d.dataset!r}: drop data.item_keys")


def _choice(key, v, allowed) -> None:
    if v not in allowed:
        raise UserError(f"config key '{key}' must be one of {', '.join(allowed)}, got {v!r}")


# Top-level keys of a tuning file (dan.tune.spec.TuneSpec) that no config has: a tuning file passed
# as --config was refused as "unknown config key 'objectives'" (a config-file audit).
TUNING_FILE_KEYS = ("params", "objectives", "sampler", "pruner", "search_epochs", "retrain_epochs", "validation")


def read_config_file(path: str) -> dict:
    """The mapping a config file holds (:meth:`Config.from_file`), read by :mod:`dan.yaml_data` with
    the text the user wrote kept for the keys that take a string (``train.amp: off`` is "off")."""
    if os.path.isdir(path):  # was "config file runs/s does not exist"
        inside = os.path.join(path, "config.yaml")
        hint = f" (the run folder's own is {inside})" if os.path.isfile(inside) else " (configs/*.yaml)"
        raise UserError(f"config file {path} is a directory: pass the YAML file itself to "
                        f"{spelt('--config', 'cfg=')}{hint}")
    if not os.path.isfile(path):
        raise UserError(f"config file {path} does not exist: pass an existing YAML file to {spelt('--config', 'cfg=')}")
    d = load_yaml_file(path, "config file", _text_at)
    if d is not None and not isinstance(d, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    if not d:  # named on purpose but sets nothing: an editor's empty save, a template left commented out
        raise UserError(f"config file {path} holds no settings (it is empty or all comments): write them, "
                        f"or drop --config to run with the defaults")
    tuning = [k for k in d if k in TUNING_FILE_KEYS and k not in Config.__dataclass_fields__]
    if tuning:
        raise UserError(f"config file {path} is a tuning file (it has {tuning[0]}:, no config key): pass it to "
                        f"tools/tune.py --tune {path}, and an experiment config (configs/*.yaml) with --config")
    return d


def takes_text(dotted: str) -> bool:
    """Whether the config key ``dotted`` (``"train.amp"``) holds a string (``str`` or
    ``Optional[str]``): there YAML's plain ``off`` or ``2026-12-07`` is read as the text written,
    not as a bool or a date (:func:`dan.yaml_data.load_yaml_text`)."""
    return _text_at(tuple(dotted.split(".")))


def _text_at(path: tuple) -> bool:
    """:func:`takes_text` of a path of keys from a config file's top."""
    hint = Config
    for name in path:
        if not (isinstance(name, str) and dataclasses.is_dataclass(hint)):
            return False
        hint = typing.get_type_hints(hint).get(name)
    return _is_text(hint)


def _is_text(hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)] == [str]
    return hint is str


def _build(cls, d: dict, prefix: str):
    if not isinstance(d, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or 'top'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            # an empty section (`data:` in YAML) takes the defaults; an empty list, string, 0 or
            # false is a typo for a mapping, refused as any other non-mapping is
            kwargs[name] = _build(hint, {} if value is None else value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(hint, value, prefix + name)
    return cls(**kwargs)


def _coerce(hint, value, where: str):
    """Check ``value`` against the annotation ``hint``; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if hint is dict and isinstance(value, dict):
        return value
    if hint in (list, tuple) and isinstance(value, (list, tuple)):
        return hint(value)
    if hint in (int, float) and isinstance(value, str) and value.strip().lower().lstrip("+-") in ("inf", "nan",
                                                                                                   "infinity"):
        # "must be float, got 'inf'" read as if inf were not a float: YAML spells it .inf
        raise UserError(f"config key '{where}' must be a finite number, got {value!r}")
    raise UserError(f"config key '{where}' must be {getattr(hint, '__name__', hint)}, got {value!r}")


def _paths_to_str(obj) -> None:
    """Replace every ``os.PathLike`` value of a config dataclass (nested) by its string."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, os.PathLike):
            setattr(obj, f.name, os.fspath(v))
        elif dataclasses.is_dataclass(v):
            _paths_to_str(v)


def _plain(x):
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
