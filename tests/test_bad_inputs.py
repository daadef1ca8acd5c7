"""Issue 11's bad-input matrix.

Two layers. Every knob case (``CASES``) goes through ``stages/validate.py`` on the composed
config, as the command line hands it over: the message must name the value as typed and the
fix. The command-line cases (``CLI_CASES``: the issue's list, and one or more per group) run
``python main.py experiment=smoke <bad input>`` (in-process, tests/cli.py) in the directory of a
finished run that shares its cache, and check exit code 2 (README, "Errors and exit codes"),
exactly one line on stderr, and the finished run and the shared cache byte-identical after.
The knob layer is enough for the rest because validate() runs before anything is written,
which the command-line cases show; a composition is 0.7 s, a command-line run 2 s."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from modelguard.errors import explain
from modelguard.stages import STAGES
from modelguard.stages.validate import validate
from tests.cli import fingerprint, run_cli, snapshot_dir
from tests.conftest import CONF_DIR

import main as entry

GROUPS = {"dataset", "arch", "defense", "quantize", "recover", "policy", "attack"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    """One finished smoke run and its cache, shared by the cases (which must not change them)."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MODELGUARD_CACHE", str(root / "cache"))
        assert entry.cli(["experiment=smoke", f"hydra.run.dir={root / 'run'}"]) == 0
    assert json.loads((root / "run" / "metrics.json").read_text()).get("status", "ok") == "ok"
    return {"run": root / "run", "cache": root / "cache", "root": root}


def fails_cleanly(capsys, monkeypatch, finished, *args: str, expect: tuple[str, ...], env=None) -> str:
    """Run a bad command in the finished run's directory; check code, message and outputs."""
    before = fingerprint(finished["run"], finished["cache"])
    result = run_cli(capsys, monkeypatch, "experiment=smoke", *args, f"hydra.run.dir={finished['run']}",
                     cache=finished["cache"], env=env)
    assert result.rc == 2, result.err
    message = result.message
    for part in expect:
        assert part in message, f"{part!r} not in {message!r}"
    assert fingerprint(finished["run"], finished["cache"]) == before
    return message


# A whole optimizer node in an override's value (substitute.shadow_recipe={...}).
SGD = "{_target_:torch.optim.SGD,_partial_:true,lr:0.01}"

# (the command-line arguments, what the message must contain: the value as typed and the fix)
CASES = [
    # the list
    (("attack.budget=100.7",), ("attack.budget=100.7 is invalid", "integer", "set attack.budget=")),
    (("attack.budget=abc",), ("attack.budget='abc' is invalid", "set attack.budget=")),
    (("substitute.epochs=0",), ("substitute.epochs=0 is invalid", "substitute.epochs=10")),
    (("victim.epochs=-1",), ("victim.epochs=-1 is invalid", "victim.epochs=10")),
    (("defense=reverse_sigmoid", "defense.beta=1e300"), ("defense.beta=1e+300 is invalid", "[0, 1)", "simplex",
                                                          "set defense.beta=0.21")),
    (("progress=maybe",), ("progress='maybe' is invalid", "true or false", "set progress=")),
    (("threads=abc",), ("threads='abc' is invalid", "set threads=1")),
    (("threads=-2",), ("threads=-2 is invalid", "set threads=1")),
    (("device=tpu",), ("device='tpu' is not a device", "device=cpu")),
    # the run knobs
    (("seed=1.5",), ("seed=1.5 is invalid", "set seed=0")),
    (("seed=true",), ("seed=True is invalid", "set seed=0")),
    (("deterministic=maybe",), ("deterministic='maybe' is invalid", "set deterministic=")),
    (("fresh=maybe",), ("fresh='maybe' is invalid", "set fresh=")),
    (("threads=0",), ("threads=0 is invalid", "set threads=1")),
    (("stages=[]",), ("stages=[] is invalid", "stages=[victim,defense]")),
    (("stages=[victim,nonsense]",), ("nonsense", "allowed: victim, defense, query, substitute")),
    (("wandb.mode=bogus",), ("wandb.mode='bogus' is invalid", "wandb.mode=offline")),
    (("amp=maybe",), ("amp='maybe' is invalid", "set amp=")),
    (("channels_last=1",), ("channels_last=1 is invalid", "set channels_last=")),
    (("cudnn_benchmark=maybe",), ("cudnn_benchmark='maybe' is invalid", "set cudnn_benchmark=")),
    (("loader.num_workers=-1",), ("loader.num_workers=-1 is invalid", "set loader.num_workers=0")),
    (("loader.pin_memory=maybe",), ("loader.pin_memory='maybe' is invalid", "set loader.pin_memory=false")),
    # the recipes
    (("victim.epochs=abc",), ("victim.epochs='abc' is invalid", "victim.epochs=10")),
    (("victim.batch_size=0",), ("victim.batch_size=0 is invalid", "victim.batch_size=64")),
    (("victim.optimizer.lr=-1",), ("victim.optimizer.lr=-1 is invalid", "set victim.optimizer.lr=0.05")),
    (("victim.optimizer.momentum=-1",), ("victim.optimizer.momentum=-1 is invalid", "set victim.optimizer.momentum=")),
    (("victim.scheduler.step_size=0",), ("victim.scheduler.step_size=0 is invalid", "set victim.scheduler.step_size=")),
    (("victim.scheduler.gamma=-1",), ("victim.scheduler.gamma=-1 is invalid", "set victim.scheduler.gamma=")),
    (("+victim.optimizer.bogus=1",), ("victim.optimizer does not fit SGD", "bogus", "conf/victim/default.yaml")),
    (("victim.oe_lambda=-1",), ("victim.oe_lambda=-1 is invalid", "set victim.oe_lambda=1.0")),
    (("victim.misinformation=maybe",), ("victim.misinformation='maybe' is invalid", "set victim.misinformation=")),
    (("victim.select=bogus",), ("victim.select='bogus' is invalid", "victim.select=last")),
    (("substitute.batch_size=2.5",), ("substitute.batch_size=2.5 is invalid", "substitute.batch_size=64")),
    (("substitute.optimizer.lr=abc",), ("substitute.optimizer.lr='abc' is invalid", "substitute.optimizer.lr=0.05")),
    (("substitute.scheduler.step_size=-1",), ("substitute.scheduler.step_size=-1 is invalid",
                                              "set substitute.scheduler.step_size=")),
    (("substitute.shadow_epochs=abc",), ("substitute.shadow_epochs='abc' is invalid", "substitute.shadow_epochs=3")),
    (("substitute.select=bogus",), ("substitute.select='bogus' is invalid", "substitute.select=last")),
    (("attack=ddae", f"substitute.shadow_recipe={{batch_size:0,optimizer:{SGD},scheduler:null}}"),
     ("substitute.shadow_recipe.batch_size=0 is invalid", "substitute.shadow_recipe.batch_size=64")),
    (("attack=ddae", "substitute.shadow_recipe={batch_size:64}"),
     ("substitute.shadow_recipe lacks optimizer, scheduler", "or null")),
    (("attack=ddae", "substitute.shadow_recipe=sgd"), ("substitute.shadow_recipe='sgd' lacks batch_size",)),
    (("attack=ddae", f"substitute.shadow_recipe={{batch_size:64,optimizer:{SGD},scheduler:{{step_size:3}}}}"),
     ("substitute.shadow_recipe.scheduler=", "_target_ and _partial_", "conf/substitute/default.yaml")),
    (("attack=ddae", "substitute.shadow_recipe={batch_size:64,optimizer:{_target_:torch.optim.SGD,_partial_:true,"
                     "lr:-1},scheduler:null}"),
     ("substitute.shadow_recipe.optimizer.lr=-1 is invalid", "set substitute.shadow_recipe.optimizer.lr=0.05")),
    # attack and policy
    (("attack.query_batch_size=abc",), ("attack.query_batch_size='abc' is invalid", "attack.query_batch_size=32")),
    (("attack.hard_label=maybe",), ("attack.hard_label='maybe' is invalid", "set attack.hard_label=false")),
    (("attack.queries_per_image=0.5",), ("attack.queries_per_image=0.5 is invalid", "attack.queries_per_image=1")),
    (("attack.augment_queries=maybe",), ("attack.augment_queries='maybe' is invalid", "attack.augment_queries=false")),
    (("attack.augment=bogus",), ("attack.augment='bogus' is invalid", "+view@attack.augment=identity")),
    (("attack.rotation_weight=abc",), ("attack.rotation_weight='abc' is invalid", "attack.rotation_weight=0.0")),
    (("attack.table_rows_per_query=0",), ("attack.table_rows_per_query=0 is invalid",
                                          "attack.table_rows_per_query=20")),
    (("policy=jbtr3", "policy.variants=abc"), ("policy.variants='abc' is invalid", "policy.variants=3")),
    (("policy=jbtr3", "policy.step_scale=-1"), ("policy.step_scale=-1 is invalid", "policy.step_scale=1.85")),
    (("policy=jbtr3", "policy.max_rounds=-1"), ("policy.max_rounds=-1 is invalid", "policy.max_rounds=null")),
    (("policy=jbtr3", "policy.seed_size=0"), ("policy.seed_size=0 is invalid", "policy.seed_size=1000")),
    (("policy=jbtr3", "policy.compat.eps_units=bogus"), ("policy.compat.eps_units='bogus' is invalid",
                                                         "policy.compat.eps_units=normalized")),
    # defenses and the quantizer
    (("defense.eps=abc",), ("defense.eps='abc' is invalid", "set defense.eps=1.0")),
    (("defense.eps=nan",), ("defense.eps=nan is invalid", "set defense.eps=1.0")),
    (("defense.budget=bogus",), ("defense.budget='bogus' is invalid", "defense.budget=per_sample")),
    (("defense.backend=bogus",), ("defense.backend='bogus' is invalid", "defense.backend=exact")),
    (("defense.margin=-1",), ("defense.margin=-1 is invalid", "set defense.margin=")),
    (("+defense.bogus=1",), ("defense cannot be built", "bogus", "conf/defense/")),
    (("defense=mad", "defense.norm=l7"), ("defense.norm='l7' is invalid", "set defense.norm=l1")),
    (("defense=mad", "defense.oracle=bogus"), ("defense.oracle='bogus' is invalid", "set defense.oracle=argmax")),
    (("defense=am", "defense.tau=2"), ("defense.tau=2 is invalid", "set defense.tau=0.7")),
    (("defense=am", "defense.adaptive=maybe"), ("defense.adaptive='maybe' is invalid", "set defense.adaptive=")),
    (("defense=topk", "defense.k=0"), ("defense.k=0 is invalid", "set defense.k=1")),
    (("defense=rounding", "defense.decimals=-1"), ("defense.decimals=-1 is invalid", "set defense.decimals=1")),
    (("defense=random_noise", "defense.strategy=bogus"), ("defense.strategy='bogus' is invalid",
                                                          "set defense.strategy=uniform")),
    (("defense=reverse_sigmoid", "defense.gamma=abc"), ("defense.gamma='abc' is invalid", "set defense.gamma=0.2")),
    (("quantize=modelguard_s", "quantize.eps=0"), ("quantize.eps=0 is invalid", "set quantize.eps=1.0")),
    (("quantize=modelguard_s", "quantize.frozen=maybe"), ("quantize.frozen='maybe' is invalid", "quantize.frozen=")),
    (("quantize=modelguard_s", "quantize.dirichlet_candidates=-1"), ("quantize.dirichlet_candidates=-1 is invalid",
                                                                     "set quantize.dirichlet_candidates=0")),
    # recovery and its table sources
    (("attack=bayes", "recover.norm=7"), ("recover.norm=7 is invalid", "set recover.norm=1")),
    (("attack=bayes", "recover.top1_buckets=maybe"), ("recover.top1_buckets='maybe' is invalid",
                                                      "set recover.top1_buckets=true")),
    (("attack=bayes", "attack.table_source.concentration_factor=-1"),
     ("attack.table_source.concentration_factor=-1 is invalid", "the paper: 8")),
    (("attack=ddae_plus", "recover.epochs=-1"), ("recover.epochs=-1 is invalid", "set recover.epochs=200")),
    (("attack=ddae_plus", "recover.train_mode_decode=maybe"), ("recover.train_mode_decode='maybe' is invalid",
                                                               "set recover.train_mode_decode=false")),
    (("attack=ddae_plus", "recover.num_classes=0"), ("recover.num_classes=0 is invalid", "recover.num_classes=null")),
    (("attack=ddae_plus", "recover.optimizer.lr=-1"), ("recover.optimizer.lr=-1 is invalid",
                                                       "set recover.optimizer.lr=0.05")),
    (("attack=ddae", "attack.table_source.count=0"), ("attack.table_source.count=0 is invalid",
                                                      "attack.table_source.count=5")),
    (("attack=ddae", "attack.table_source.split=bogus"), ("attack.table_source.split='bogus' is invalid",
                                                          "attack.table_source.split=auto")),
    # data (the dataset and arch packages own these checks)
    (("dataset.num_classes=1",), ("dataset.num_classes=1 is invalid",)),
    (("dataset.train_size=0",), ("dataset.train_size=0 is invalid", "set dataset.train_size=256")),
    (("dataset.noise=-1",), ("dataset.noise=-1 is invalid", "set dataset.noise=0.15")),
    (("dataset.outlier_count=0",), ("dataset.outlier_count=0 is invalid", "set dataset.outlier_count=128")),
    (("dataset=mnist", "dataset.test_fraction=2"), ("dataset.test_fraction=2 is invalid",
                                                    "dataset.test_fraction=0.2")),
    (("arch.hidden=0",), ("arch.hidden=0 is invalid", "integer ≥ 1", "set arch.hidden=64")),
    (("arch.hidden=abc",), ("arch.hidden='abc' is invalid", "set arch.hidden=64")),
    (("arch=lenet", "arch.width=0"), ("arch.width=0 is invalid", "integer ≥ 1", "set arch.width=1")),
    (("arch=lenet", "arch.width=abc"), ("arch.width='abc' is invalid", "set arch.width=1")),
    (("arch=resnet18", "arch.small_input_stem=maybe"), ("arch.small_input_stem='maybe' is invalid", "true or false",
                                                        "set arch.small_input_stem=true")),
    (("arch=resnet18", "arch.download=maybe"), ("arch.download='maybe' is invalid", "set arch.download=false")),
    (("arch=alexnet", "arch.family=bogus"), ("arch.family='bogus' is invalid", "auto, imagenet, cifar",
                                             "set arch.family=auto")),
    (("attack=ddae", "+arch@substitute.shadow_arch=mlp", "substitute.shadow_arch.hidden=0"),
     ("substitute.shadow_arch.hidden=0 is invalid", "set substitute.shadow_arch.hidden=64")),
]

# Through the command line: the list, what only the command line sees (an unknown
# option, a budget checked against the data), and at least one knob of every group.
CLI_ONLY = [
    (("defense=nonexistent",), ("defense/nonexistent", "Available options in 'defense'", "mld")),
    (("attack.budget=100000",), ("attack.budget=100000 exceeds the query pool of 512 images",
                                 "lower attack.budget", "(dataset.pool_size)")),
    (("bogus=1",), ("Could not override 'bogus'",)),
    (("+view@attack.augment=bogus",), ("Could not find 'view/bogus'", "Available options in 'view': identity")),
]
CLI_CASES = CLI_ONLY + [case for case in CASES if case[0] in {
    ("attack.budget=100.7",), ("attack.budget=abc",), ("substitute.epochs=0",), ("victim.epochs=-1",),
    ("defense=reverse_sigmoid", "defense.beta=1e300"), ("progress=maybe",), ("threads=abc",), ("threads=-2",),
    ("device=tpu",), ("stages=[victim,nonsense]",), ("seed=1.5",), ("wandb.mode=bogus",),
    ("victim.optimizer.lr=-1",), ("+defense.bogus=1",), ("quantize=modelguard_s", "quantize.eps=0"),
    ("attack=bayes", "recover.top1_buckets=maybe"), ("policy=jbtr3", "policy.variants=abc"),
    ("dataset.num_classes=1",), ("attack=ddae", f"substitute.shadow_recipe={{batch_size:0,optimizer:{SGD},scheduler:null}}"),
    ("attack=ddae", "substitute.shadow_recipe={batch_size:64}"), ("arch.hidden=0",), ("arch.hidden=abc",),
    ("arch=lenet", "arch.width=0"), ("arch=lenet", "arch.width=abc"), ("arch=resnet18", "arch.small_input_stem=maybe")}]


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """composed(choices) -> a copy of the smoke config with those group choices (composed once)."""
    root = tmp_path_factory.mktemp("knobs")
    configs = {}

    def get(choices: tuple[str, ...]):
        if choices not in configs:
            GlobalHydra.instance().clear()
            with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
                cfg = compose("main", ["experiment=smoke", *choices])
            with open_dict(cfg):
                cfg.paths.output_dir = str(root / "run")
                cfg.paths.cache_dir = str(root / "cache")
            configs[choices] = cfg
        return copy.deepcopy(configs[choices])

    yield get, root
    GlobalHydra.instance().clear()


def with_overrides(cfg, overrides):
    """Apply ``key=value`` overrides as Hydra parses them (``abc`` a string, ``1e300`` a float)."""
    for parsed in OverridesParser.create().parse_overrides(list(overrides)):
        with open_dict(cfg):
            OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=False)
    return cfg


@pytest.mark.parametrize("args, expect", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_every_knob_is_checked_before_anything_runs(composed, args, expect):
    get, root = composed
    choices = tuple(a for a in args if a.split("=")[0].lstrip("+").split("@")[0] in GROUPS)  # +arch@...: a choice
    cfg = with_overrides(get(choices), [a for a in args if a not in choices])
    with pytest.raises((ValueError, RuntimeError)) as raised:
        validate(cfg)
    for part in expect:
        assert part in str(raised.value), f"{part!r} not in {str(raised.value)!r}"
    assert not (root / "run").exists() and not (root / "cache").exists()  # nothing written


@pytest.mark.parametrize("args, expect", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_bad_input_gets_one_message_and_exit_code_2(capsys, monkeypatch, finished, args, expect):
    fails_cleanly(capsys, monkeypatch, finished, *args, expect=expect)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_on_a_finished_dir_rewrites_no_marker(capsys, monkeypatch, finished):
    """device=cuda fresh=true: refused before any stage, so no marker is rewritten (issue 11)."""
    fails_cleanly(capsys, monkeypatch, finished, "device=cuda", "fresh=true",
                  expect=("device=cuda", "CUDA is not available", "device=cpu"))


def test_dataset_on_disk_that_is_missing_is_named_before_any_stage(capsys, monkeypatch, finished, tmp_path):
    fails_cleanly(capsys, monkeypatch, finished, "dataset=cifar10", env={"MODELGUARD_DATA": str(tmp_path / "none")},
                  expect=(f"the data root {tmp_path / 'none'} does not exist", "MODELGUARD_DATA", "cifar10"))


def test_budget_beyond_a_pool_on_disk_names_the_pool_and_its_size(capsys, monkeypatch, finished, tmp_path):
    """A pool on disk has no dataset.pool_size: the fix is a budget within it, or another pool."""
    from tests.dataset.test_ondisk import cifar_triple
    cifar_triple(tmp_path / "data")  # a TinyImageNet200 pool of 12 images
    message = fails_cleanly(capsys, monkeypatch, finished, "dataset=cifar10", "attack.budget=13",
                            env={"MODELGUARD_DATA": str(tmp_path / "data")},
                            expect=("attack.budget=13 exceeds the query pool tinyimagenet200 (dataset.pool) of 12 "
                                    "images", "set attack.budget=12 or lower", "dataset/pool="))
    assert "pool_size" not in message


@pytest.mark.parametrize("stages", ["stages=[victim]", "stages=[victim,defense]"])
def test_missing_data_for_the_victim_stage_leaves_no_cache_entry(capsys, monkeypatch, tmp_path, stages):
    """experiment=paper/cifar10 with no data: refused before the victim stage takes its cache lock
    (which would leave an empty entry with a .lock), and before the run dir gets a marker."""
    cache = tmp_path / "cache"
    cache.mkdir()
    result = run_cli(capsys, monkeypatch, "experiment=paper/cifar10", f"paths.data_dir={tmp_path / 'none'}",
                     "debug=fast", stages, f"hydra.run.dir={tmp_path / 'run'}", cache=cache)
    assert result.rc == 2
    assert f"the data root {tmp_path / 'none'} does not exist" in result.message
    assert snapshot_dir(cache) == set()
    assert not (tmp_path / "run" / "stages").exists()


def test_empty_cache_variable_writes_no_cache_in_the_working_dir(capsys, monkeypatch, finished, tmp_path):
    monkeypatch.chdir(tmp_path)
    message = fails_cleanly(capsys, monkeypatch, finished, env={"MODELGUARD_CACHE": ""},
                            expect=("paths.cache_dir='' is empty", "MODELGUARD_CACHE", "outputs/cache"))
    assert "unset MODELGUARD_CACHE" in message
    assert snapshot_dir(tmp_path) == set()  # no ./victims, nothing at all


@pytest.mark.parametrize("dataset", ["cifar10", "caltech256"])
def test_empty_data_variable_is_refused_for_data_on_disk(capsys, monkeypatch, finished, tmp_path, dataset):
    """MODELGUARD_DATA= (empty) would read the datasets from the working directory: refused, as an
    empty MODELGUARD_CACHE, before anything is read or written."""
    monkeypatch.chdir(tmp_path)
    from tests.dataset.test_ondisk import cifar_triple
    cifar_triple(tmp_path)  # a tree in the working directory, which an empty root would read
    before = snapshot_dir(tmp_path)
    message = fails_cleanly(capsys, monkeypatch, finished, f"dataset={dataset}", env={"MODELGUARD_DATA": ""},
                            expect=("paths.data_dir='' is empty", "MODELGUARD_DATA set to an empty string",
                                    "unset MODELGUARD_DATA for the default data/"))
    assert "set MODELGUARD_DATA (or paths.data_dir) to the directory holding the datasets" in message
    assert snapshot_dir(tmp_path) == before


def test_empty_data_variable_does_not_matter_to_embedded_data(composed, monkeypatch, tmp_path):
    get, _ = composed
    monkeypatch.setenv("MODELGUARD_DATA", "")
    validate(with_overrides(get(()), [f"paths.cache_dir={tmp_path / 'cache'}"]))  # synthetic data reads no root
    with pytest.raises(ValueError, match=r"dataset.victim.root='' is empty; set it to the directory"):
        cfg = with_overrides(get(("dataset=cifar10",)), ["paths.data_dir=/data", "dataset.victim.root="])
        validate(cfg)


def test_cache_variable_naming_a_file(capsys, monkeypatch, finished, tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    for where in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        fails_cleanly(capsys, monkeypatch, finished, env={"MODELGUARD_CACHE": str(where)},
                      expect=(f"paths.cache_dir='{where}' is invalid", f"{tmp_path / 'afile'} is a file",
                              "set MODELGUARD_CACHE"))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, which nobody (not even root) can write")
def test_unwritable_cache_dir_is_named_and_stays_out_of_the_run_dir_name(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the default run dir: outputs/runs/... under the working directory
    result = run_cli(capsys, monkeypatch, "experiment=smoke", "paths.cache_dir=/proc/modelguard-nope")
    assert result.rc == 2
    assert "paths.cache_dir='/proc/modelguard-nope' cannot be created" in result.message
    assert "writable directory" in result.message
    runs = {str(p.relative_to(tmp_path / "outputs" / "runs")) for p in (tmp_path / "outputs" / "runs").glob("*/*/*/*")}
    assert runs == {"naive/mld/experiment=smoke/seed=0"}  # the cache path is no part of the name


def test_multirun_without_a_name_is_one_short_message(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, monkeypatch, "-m", "experiment=smoke", "defense=none,top1", cache=tmp_path / "cache")
    assert result.rc == 2
    assert "a multirun (-m) needs a name: add sweep_name=<name>" in result.message
    assert snapshot_dir(tmp_path) == set()  # no job ran


def test_single_stage_name_is_a_one_element_list(capsys, monkeypatch, tmp_path):
    """stages=victim (a string, not [victim]) runs the victim stage only, not the letters v, i, c..."""
    result = run_cli(capsys, monkeypatch, "experiment=smoke", "stages=victim", f"hydra.run.dir={tmp_path / 'run'}",
                     cache=tmp_path / "cache")
    assert result.rc == 0, result.err
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "victim/test_acc" in record and "defense/protected_acc" not in record
    assert sorted(p.name for p in (tmp_path / "run" / "stages").iterdir()) == ["victim.json"]


def test_unexpected_error_is_one_line_with_the_traceback_in_the_record(capsys, monkeypatch, tmp_path):
    """An error no check foresaw (a bug) still exits 2 with one line; the traceback is in the
    failed job's metrics.json, and HYDRA_FULL_ERROR=1 prints it."""
    def broken(cfg):
        raise TypeError("boom from a broken stage")

    monkeypatch.setitem(STAGES, "defense", broken)
    args = ("experiment=smoke", "stages=[victim,defense]", f"hydra.run.dir={tmp_path / 'run'}")
    result = run_cli(capsys, monkeypatch, *args, cache=tmp_path / "cache")
    assert result.rc == 2
    assert "unexpected TypeError: boom from a broken stage" in result.message
    assert "HYDRA_FULL_ERROR=1" in result.message and "Traceback" not in result.err
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "TypeError: boom" in record["error"]
    assert any("def broken" in line or "boom from a broken stage" in line for line in record["traceback"])
    debug = run_cli(capsys, monkeypatch, *args, cache=tmp_path / "cache", env={"HYDRA_FULL_ERROR": "1"})
    assert debug.rc == 2 and "Traceback" in debug.err and "in broken" in debug.err
    assert debug.err.strip().splitlines()[-1].startswith("error: unexpected TypeError")


def test_gres_refusal_names_the_settings_and_the_fix(monkeypatch):
    """cluster=slurm on a partition without GPUs: sbatch's gres error, as submitit raises it
    (FailedJobError from CalledProcessError), gets a message naming what asked for the GPUs."""
    import subprocess

    from submitit.core.utils import FailedJobError

    stderr = "sbatch: error: Invalid generic resource (gres) specification"
    try:
        try:
            raise subprocess.CalledProcessError(1, ["sbatch", "job.sh"], output="", stderr=stderr)
        except subprocess.CalledProcessError as called:
            raise FailedJobError(stderr) from called
    except FailedJobError as err:
        failure = err
    monkeypatch.delenv("MODELGUARD_GPUS", raising=False)
    message = explain(failure)
    assert "hydra.launcher.gpus_per_node=1 (the default)" in message and "MODELGUARD_GPUS" in message
    assert "MODELGUARD_GPUS=null" in message and "MODELGUARD_PARTITION" in message
    monkeypatch.setenv("MODELGUARD_GPUS", "2")
    assert "hydra.launcher.gpus_per_node=2 GPU(s)" in explain(failure)


def test_foreign_errors_pass_through_and_bugs_are_labelled():
    assert explain(ValueError("x=1 is invalid: ...; set x=2")) == "x=1 is invalid: ...; set x=2"
    assert explain(FileNotFoundError("no such file: a.pt")) == "no such file: a.pt"
    assert explain(KeyError("k")).startswith("unexpected KeyError: 'k' (a bug")
